"""Publishing through the Redis inbox of a real gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from chouquette import Event, TokenSigner
from chouquette.inbox import AsyncInboxPublisher, InboxPublisher

from conftest import APP, REDIS_URL, Client, Gateway, channel_name, eventually


def test_inbox_events_and_batches_reach_subscribers(
    gateway: Gateway, client: Client, signer: TokenSigner, redis_client: "redis.Redis"
) -> None:
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    inbox = InboxPublisher(redis_client, APP, inbox=gateway.inbox)
    entry = inbox.publish(Event(channel, "alarm", {"borne": "B1"}, data="one"))
    inbox.publish_batch([Event(channel, "alarm", data="two"),
                         Event(channel, "alarm", data="three")])
    received = [client.until("data") for _ in range(3)]
    assert [m["data"] for m in received] == ["one", "two", "three"]
    assert [m["offset"] for m in received] == [1, 2, 3]
    assert received[0]["keywords"] == ["borne:B1"]
    stored: Any = redis_client.xrange(gateway.inbox, min=entry, max=entry)
    event = json.loads(stored[0][1][b"event"])
    assert event["app_id"] == APP and event["id"], "every event carries an idempotency id"


def test_the_same_event_appended_twice_is_published_once(
    gateway: Gateway, client: Client, signer: TokenSigner, redis_client: "redis.Redis"
) -> None:
    """What a retry after a lost XADD answer does: the ids keep it once."""
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    inbox = InboxPublisher(redis_client, APP, inbox=gateway.inbox)
    twice = Event(channel, "alarm", data="once", id="alarm-42")
    inbox.publish(twice)
    inbox.publish(twice)
    inbox.publish(Event(channel, "alarm", data="then"))
    assert [client.until("data")["data"] for _ in range(2)] == ["once", "then"]


def test_refused_entries_are_dead_letters(gateway: Gateway, redis_client: "redis.Redis") -> None:
    inbox = InboxPublisher(redis_client, "no-such-app", inbox=gateway.inbox)
    entry = inbox.publish(Event(channel_name(), "alarm"))
    dead = eventually(
        lambda: [f for _, f in inbox.dead_letters() if f.get("id") == entry], "its dead letter"
    )
    assert "no-such-app" in dead[0]["entry"] and dead[0]["error"], dead


def test_the_async_inbox_publisher(gateway: Gateway, client: Client, signer: TokenSigner) -> None:
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"

    async def run() -> None:
        async with AsyncInboxPublisher(REDIS_URL, APP, inbox=gateway.inbox) as inbox:
            await inbox.publish(Event(channel, "alarm", data="a"))
            # One Event object twice, no id: each gets its own, both go out.
            await inbox.publish_batch([Event(channel, "alarm", data="b")] * 2)

    asyncio.run(run())
    assert [client.until("data")["data"] for _ in range(3)] == ["a", "b", "b"]


def test_an_unreachable_redis_is_unavailable_after_the_retries() -> None:
    from chouquette import Retry, UnavailableError

    from conftest import free_port

    fast = Retry(attempts=3, base_delay=0.01, max_delay=0.02)
    with InboxPublisher(f"redis://127.0.0.1:{free_port()}", APP, retry=fast) as inbox:
        with pytest.raises(UnavailableError) as lost:
            inbox.publish(Event("bornes", "alarm"))
    assert lost.value.status is None and "unreachable" in lost.value.message
