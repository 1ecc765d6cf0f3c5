"""Calls, messages, notifications and lattices addressed to users, on a
real gateway with real WebSocket clients."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Dict, List

import pytest

from chouquette import (
    AsyncUsers,
    BadMessageError,
    CallTimeoutError,
    ClientCallError,
    NotConnectedError,
    TokenSigner,
    TooLargeError,
    Users,
    counter,
    gset,
    register,
)

from conftest import API_KEY, APP, Client, Gateway


def user_name() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def connected(client: Client, signer: TokenSigner, user: str) -> None:
    client.send(signer.connect_message(user))
    assert client.until("ack")["class"] == "ack"


def in_thread(work: Any) -> Dict[str, Any]:
    """Runs `work()` in a thread; the dict gets its `value` or `error`."""
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    out["thread"] = thread
    return out


def test_a_call_is_answered_by_the_users_client(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    user = user_name()
    connected(client, signer, user)
    with Users(gateway.internal, API_KEY, APP) as users:
        pending = in_thread(lambda: users.call(user, "ui.confirm", "reboot B1?", timeout=5))
        call = client.until("call")
        assert (call["method"], call["args"]) == ("ui.confirm", ["reboot B1?"])
        client.send({"class": "result", "id": call["id"], "result": {"confirmed": True}})
        pending["thread"].join(10)
        assert pending.get("value") == {"confirmed": True}, pending

        refused = in_thread(lambda: users.call(user, "ui.confirm", timeout=5))
        call = client.until("call")
        client.send({"class": "error", "id": call["id"], "code": "declined", "message": "no"})
        refused["thread"].join(10)
        error = refused.get("error")
        assert isinstance(error, ClientCallError) and error.code == "declined", refused

        with pytest.raises(NotConnectedError):
            users.call(user_name(), "ui.confirm")
        with pytest.raises(CallTimeoutError):
            users.call(user, "ui.ignored", timeout=0.3)


def test_a_message_reaches_the_user(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    user = user_name()
    connected(client, signer, user)
    with Users(gateway.internal, API_KEY, APP) as users:
        assert users.send(user, "toast", {"text": "B1 is back"}) == 1
    message = client.until("message")
    assert (message["event_kind"], message["data"]) == ("toast", {"text": "B1 is back"})


def test_a_notification_is_pending_until_acknowledged(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    user = user_name()
    connected(client, signer, user)
    with Users(gateway.internal, API_KEY, APP) as users:
        first = users.notify(user, "comment", title="New comment", link="/posts/7", id="c-1")
        assert users.notify(user, "comment", title="New comment", id="c-1") == first
    seen = client.until("notification")
    assert (seen["id"], seen["title"], seen["link"]) == (first, "New comment", "/posts/7")
    client.send({"class": "notification_ack", "ids": [first]})
    assert client.until("ack")["class"] == "ack"


def test_lattice_updates_reach_a_subscribed_user(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    user, namespace = user_name(), f"ns-{uuid.uuid4().hex[:8]}"
    connected(client, signer, user)
    client.send({"class": "lattice_subscribe", "namespace": namespace})
    assert client.until("lattice")["full"] is True
    values = {"rooms": gset(["r1", "r2"]), "status": register("away", 1733130000.5)}
    with Users(gateway.internal, API_KEY, APP) as users:
        changed = users.update_lattices(
            namespace, shared={"total": counter(7)}, users={user: values}
        )
        assert changed == {"shared": 1, "users": 1}
        got: List[Dict[str, Any]] = []
        while not any(m["user"] for m in got):
            got.append(client.until("lattice"))
        user_values = next(m["user"] for m in got if m["user"])
        assert user_values["rooms"] == {"set": ["r1", "r2"]}
        with pytest.raises(BadMessageError):
            users.update_lattices(namespace, shared={"total": {"counter": "seven"}})
        with pytest.raises(TooLargeError):
            many = {f"k{i}": counter(i) for i in range(300)}
            users.update_lattices(namespace, shared=many)


def test_the_asyncio_twin(gateway: Gateway, client: Client, signer: TokenSigner) -> None:
    user = user_name()
    connected(client, signer, user)

    async def run() -> str:
        async with AsyncUsers(gateway.internal, API_KEY, APP) as users:
            assert await users.send(user, "toast") == 1
            with pytest.raises(NotConnectedError):
                await users.call(user_name(), "x")
            return await users.notify([user], "system", title="maintenance")

    notification = asyncio.run(run())
    assert client.until("message")["event_kind"] == "toast"
    assert client.until("notification")["id"] == notification
