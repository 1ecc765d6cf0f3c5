"""The HTTP publisher against a real gateway: positions, batches,
idempotent retries, and one exception class per error code."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import List, Optional

import httpx
import pytest

from chouquette import (
    AsyncPublisher,
    BadMessageError,
    ChouquetteError,
    Event,
    NotAllowedError,
    Publisher,
    RateLimitedError,
    Retry,
    TokenSigner,
    UnavailableError,
    UnknownAppError,
)
from chouquette.admin import Admin

from conftest import (
    ADMIN_KEY, API_KEY, APP, SLOW_APP, SLOW_KEY, WAIT, Client, Gateway, channel_name,
    count_requests,
)

FAST = Retry(attempts=4, base_delay=0.01, max_delay=0.05)


def test_single_events_and_batches_get_their_positions(gateway: Gateway) -> None:
    channel = channel_name()
    with Publisher(gateway.internal, API_KEY, APP, retry=FAST) as pub:
        first = pub.publish(Event(channel, "tick", ["n:1"], data=1))
        batch = pub.publish_batch([Event(channel, "tick", {"n": n}, data=n) for n in (2, 3, 4)]
                                  + [{"channel": channel, "event_kind": "tick", "data": 5}])
    assert first.offset == 1 and not first.duplicate
    assert [p.offset for p in batch] == [2, 3, 4, 5]
    assert {p.epoch for p in batch} == {first.epoch}


def test_the_same_id_is_published_once_and_answered_duplicate(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    with Publisher(gateway.internal, API_KEY, APP, retry=FAST) as pub:
        once = pub.publish(Event(channel, "order", data="A", id="order-17"))
        again = pub.publish(Event(channel, "order", data="A", id="order-17"))
        after = pub.publish(Event(channel, "order", data="B"))
    assert (again.offset, again.epoch, again.duplicate) == (once.offset, once.epoch, True)
    assert [client.until("data")["data"] for _ in range(2)] == ["A", "B"]
    assert after.offset == once.offset + 1


class DropFirstAnswer:
    """A TCP relay to the gateway that loses the answer to the first
    request: the gateway publishes, the publisher sees the connection
    drop, as when a timeout or a network cut hides a success."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.dropped = threading.Event()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            drop = self.connections == 1
            upstream = socket.create_connection(self.target, timeout=WAIT)
            for args in ((downstream, upstream, False), (upstream, downstream, drop)):
                threading.Thread(target=self.pipe, args=args, daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket, drop: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or drop:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if drop:
                self.dropped.set()
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_retry_after_a_lost_answer_never_publishes_twice(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    relay = DropFirstAnswer(gateway.internal)
    seen, hooks = count_requests()
    try:
        with httpx.Client(timeout=WAIT, **hooks) as http:
            pub = Publisher(relay.url, API_KEY, APP, retry=FAST, client=http)
            # No id given: the publisher made one before the first attempt.
            position = pub.publish(Event(channel, "alarm", data="once"))
            follow = pub.publish(Event(channel, "alarm", data="next"))
    finally:
        relay.close()
    assert relay.dropped.is_set() and len(seen) == 3, seen
    assert position.duplicate and position.offset == 1, position
    assert follow.offset == 2
    assert [client.until("data")["data"] for _ in range(2)] == ["once", "next"]


def test_bad_message_names_the_event_of_the_batch(gateway: Gateway) -> None:
    channel = channel_name()
    with Publisher(gateway.internal, API_KEY, APP, retry=FAST) as pub:
        with pytest.raises(BadMessageError) as refused:
            pub.publish_batch([Event(channel, "ok"), Event(channel, "ok", ["no colon"])])
        assert (refused.value.status, refused.value.index) == (400, 1)
        assert "keyword" in refused.value.message
        # Nothing of the batch went out: the next event is offset 1.
        assert pub.publish(Event(channel, "ok")).offset == 1


def test_a_wrong_key_or_unknown_app_is_not_allowed(gateway: Gateway) -> None:
    seen, hooks = count_requests()
    with httpx.Client(**hooks) as http:
        for app, key in ((APP, "wrong-key"), ("nope", API_KEY)):
            pub = Publisher(gateway.internal, key, app, retry=FAST, client=http)
            with pytest.raises(NotAllowedError) as refused:
                pub.publish(Event("bornes", "alarm"))
            assert refused.value.status == 403
    assert len(seen) == 2, "a refusal is never retried"


def test_rate_limited_carries_retry_after_and_is_retried_after_it(gateway: Gateway) -> None:
    channel = channel_name()
    strict = Retry(attempts=1)
    with Publisher(gateway.internal, SLOW_KEY, SLOW_APP, retry=strict) as pub:
        errors: List[RateLimitedError] = []
        for n in range(3):  # the burst is one event
            try:
                pub.publish(Event(channel, "tick", data=n))
            except RateLimitedError as e:
                errors.append(e)
        assert errors and errors[0].status == 429
        assert errors[0].retry_after is not None and errors[0].retry_after >= 1
    with Publisher(gateway.internal, SLOW_KEY, SLOW_APP,
                   retry=Retry(attempts=3, max_retry_after=5)) as pub:
        assert pub.publish(Event(channel, "tick", data="waited")).offset >= 2


def test_unavailable_is_retried_then_raised(gateway_without_redis: Gateway) -> None:
    seen, hooks = count_requests()
    with httpx.Client(**hooks) as http:
        pub = Publisher(gateway_without_redis.internal, API_KEY, APP, retry=FAST, client=http)
        with pytest.raises(UnavailableError) as refused:
            pub.publish(Event("bornes", "alarm"))
    assert refused.value.status == 503 and refused.value.published == []
    assert len(seen) == FAST.attempts


def test_no_gateway_at_all_is_unavailable_without_status() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with Publisher(f"http://127.0.0.1:{port}", API_KEY, APP, retry=FAST) as pub:
            with pytest.raises(UnavailableError) as lost:
                pub.publish(Event("bornes", "alarm"))
    assert lost.value.status is None


def test_a_full_channel_is_507_and_not_retried(gateway: Gateway) -> None:
    seen, hooks = count_requests()
    with httpx.Client(**hooks) as http:
        pub = Publisher(gateway.internal, API_KEY, APP, retry=FAST, client=http)
        pub.publish(Event("tiny", "state", key="k1"))
        with pytest.raises(UnavailableError) as full:
            pub.publish(Event("tiny", "state", key="k2"))
    assert full.value.status == 507 and len(seen) == 2


def test_an_unknown_app_on_the_admin_publish(gateway: Gateway) -> None:
    with Admin(gateway.internal, ADMIN_KEY, retry=FAST) as admin:
        with pytest.raises(UnknownAppError) as unknown:
            admin.publish({"app_id": "nope", "channel": "c", "event_kind": "k"})
        assert unknown.value.status == 404
        assert admin.publish(Event(channel_name(), "k", app_id=APP)).offset == 1


def test_every_error_is_a_chouquette_error() -> None:
    for cls in (BadMessageError, NotAllowedError, RateLimitedError, UnavailableError,
                UnknownAppError):
        assert issubclass(cls, ChouquetteError)


def test_the_async_publisher(gateway: Gateway, client: Client, signer: TokenSigner) -> None:
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"

    async def run() -> Optional[BadMessageError]:
        async with AsyncPublisher(gateway.internal, API_KEY, APP, retry=FAST) as pub:
            one = await pub.publish(Event(channel, "a", data=1, id="x"))
            two = await pub.publish_batch([Event(channel, "a", data=1, id="x"),
                                           Event(channel, "a", data=2)])
            assert one.offset == 1 and two[0].duplicate and two[1].offset == 2
            try:
                await pub.publish(Event("bad name", "a"))
            except BadMessageError as e:
                return e
            return None

    error = asyncio.run(run())
    assert error is not None and error.status == 400
    assert [client.until("data")["data"] for _ in range(2)] == [1, 2]
