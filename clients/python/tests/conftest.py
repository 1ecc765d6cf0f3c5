"""A real gateway process for the tests, and a small WebSocket client.

The binary is `$CHOUQUETTE_BIN`, else the repository's
`target/debug/chouquette` (scripts/test-python.sh builds it); Redis is
`$CHOUQUETTE_TEST_REDIS` or redis://127.0.0.1:6379. Neither missing is a
skip: the session fails, loudly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import httpx
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from chouquette import TokenSigner
from chouquette.signature import HEADER, verify_call
from chouquette.errors import SignatureError

ROOT = Path(__file__).resolve().parents[3]
APP = "bluelib"
#: At least 32 bytes each, as RFC 7518 asks of HS256 keys.
SECRETS = ["s3cret-current-0123456789abcdef-0123", "s3cret-previous-0123456789abcdef-012"]
API_KEY = "k-bluelib"
SLOW_APP = "slow"
SLOW_KEY = "k-slow"
ADMIN_KEY = "admin-key"
REDIS_URL = os.environ.get("CHOUQUETTE_TEST_REDIS", "redis://127.0.0.1:6379")
#: Every wait of the tests is bounded by this (seconds).
WAIT = 10.0


def binary() -> Path:
    path = Path(os.environ.get("CHOUQUETTE_BIN", ROOT / "target" / "debug" / "chouquette"))
    if not path.is_file():
        pytest.fail(f"no gateway binary at {path}: run `cargo build -p chouquette` first",
                    pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Polls `check` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last = e
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


@dataclass
class Gateway:
    """A running gateway: its public and internal base URLs."""

    public: str
    internal: str
    process: "subprocess.Popen[bytes]"
    log: Path
    prefix: str = ""
    inbox: str = ""

    @property
    def ws(self) -> str:
        return self.public.replace("http://", "ws://") + "/ws"


def config(public: int, internal: int, broker: str, rpc_url: Optional[str]) -> str:
    rpc = f'\n[[apps.rpc]]\nprefix = "py."\nurl = "{rpc_url}"\ntimeout = "5s"\n' if rpc_url else ""
    return f"""
[listen]
public = "127.0.0.1:{public}"
internal = "127.0.0.1:{internal}"

[admin]
key = "{ADMIN_KEY}"

{broker}

[log]
level = "warn"

[[apps]]
id = "{APP}"
secrets = {json.dumps(SECRETS)}
api_key = "{API_KEY}"

[apps.channels.bornes]
keep_state = true

[apps.channels.tiny]
keep_state = true
max_state_keys = 1
{rpc}
[[apps]]
id = "{SLOW_APP}"
secrets = ["slow-secret-0123456789abcdef-0123456789"]
api_key = "{SLOW_KEY}"

[apps.limits]
publishes_per_second = 1
publish_burst = 1
"""


def start_gateway(
    tmp: Path, broker: str, *, rpc_url: Optional[str] = None, ready: bool = True
) -> Gateway:
    public, internal = free_port(), free_port()
    path = tmp / "chouquette.toml"
    path.write_text(config(public, internal, broker, rpc_url))
    log = tmp / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(binary()), "serve", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT
        )
    gw = Gateway(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal}", process, log)
    probe = "/readyz" if ready else "/healthz"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited: {log.read_text()}")
        return httpx.get(gw.internal + probe, timeout=1).status_code == 200

    try:
        eventually(up, "the gateway answers " + probe, timeout=30)
    except AssertionError:
        stop(gw)
        raise
    return gw


def stop(gw: Gateway) -> None:
    gw.process.terminate()
    try:
        gw.process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        gw.process.kill()
        gw.process.wait()


# --- an RPC backend built on chouquette.signature, for the gateway's route


class RpcBackend:
    """Answers the gateway's signed calls with `verify_call`; records what
    it verified and what it refused."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []
        self.refused: List[str] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    call = verify_call(SECRETS, self.headers.get(HEADER), body)
                except SignatureError as e:
                    backend.refused.append(str(e))
                    self.answer(401, {"code": "bad_signature", "message": str(e)})
                    return
                backend.calls.append({"method": call.method, "user": call.user})
                self.answer(200, {"method": call.method, "user_id": call.user.user_id,
                                  "groups": call.user.groups, "args": call.args})

            def answer(self, status: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/rpc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def redis_client() -> Iterator["redis.Redis"]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"no Redis at {REDIS_URL} ({e}): the inbox tests need one", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def rpc_backend() -> Iterator[RpcBackend]:
    backend = RpcBackend()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_client: "redis.Redis", rpc_backend: RpcBackend
) -> Iterator[Gateway]:
    """One gateway on the real Redis, under a prefix and inbox of its own
    (other test runs share that Redis), with an RPC route to `rpc_backend`."""
    prefix = f"pytest-{uuid.uuid4().hex[:12]}"
    inbox = f"{prefix}:inbox"
    broker = (
        f'[broker]\nkind = "redis"\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
        f'inbox = "{inbox}"\n'
    )
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), broker, rpc_url=rpc_backend.url)
    gw.prefix, gw.inbox = prefix, inbox
    yield gw
    stop(gw)
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def gateway_without_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose Redis is not there: the broker refuses, 503."""
    broker = f'[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:{free_port()}"\n'
    gw = start_gateway(tmp_path_factory.mktemp("broken"), broker, ready=False)
    yield gw
    stop(gw)


@pytest.fixture(scope="session")
def signer() -> TokenSigner:
    return TokenSigner(APP, SECRETS)


# --- WebSocket client


class Client:
    """One WebSocket connection to the gateway, reading JSON messages."""

    def __init__(self, gw: Gateway) -> None:
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(connect(gw.ws, open_timeout=WAIT))

    def send(self, message: Dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float = WAIT) -> Dict[str, Any]:
        raw = self.ws.recv(timeout=timeout)
        message = json.loads(raw)
        assert isinstance(message, dict), message
        return message

    def until(self, cls: str, timeout: float = WAIT) -> Dict[str, Any]:
        """The next message of class `cls`, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message["class"] == cls:
                return message

    def subscribe(self, message: Dict[str, Any]) -> Dict[str, Any]:
        """Sends a subscribe message; its ack, or the error if refused."""
        self.send(message)
        while True:
            answer = self.recv()
            if answer["class"] in ("ack", "error"):
                return answer

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[Client]:
    c = Client(gateway)
    yield c
    c.close()


def channel_name(base: str = "ch") -> str:
    """A channel of its own for a test (offsets start at 1, no history)."""
    return f"{base}-{uuid.uuid4().hex[:10]}"


def count_requests() -> Tuple[List[str], Dict[str, Any]]:
    """An httpx event hook counting requests (how many attempts a retry
    policy made), and the client keyword arguments installing it."""
    seen: List[str] = []

    def hook(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    return seen, {"event_hooks": {"request": [hook]}}
