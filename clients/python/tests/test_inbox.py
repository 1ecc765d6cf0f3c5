"""Publishing through the Redis inbox of a real gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
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


def _connected(client: Client, signer: TokenSigner) -> str:
    user = f"u-{uuid.uuid4().hex[:10]}"
    client.send(signer.connect_message(user))
    assert client.until("ack")["class"] == "ack"
    return user


def test_a_notification_through_the_inbox_reaches_the_user_once(
    gateway: Gateway, client: Client, signer: TokenSigner, redis_client: "redis.Redis"
) -> None:
    user = _connected(client, signer)
    inbox = InboxPublisher(redis_client, APP, inbox=gateway.inbox)
    entry = inbox.notify(user, "comment", title="New comment", body="Ana commented",
                         link="/posts/7", data={"post": 7}, id="comment-1234")
    # What a retry after a lost XADD answer does: the id keeps it once.
    inbox.notify([user], "comment", title="New comment", id="comment-1234")
    inbox.notify([user], "system", title="then")
    first = client.until("notification")
    assert (first["kind"], first["title"], first["body"], first["link"], first["data"]) == (
        "comment", "New comment", "Ana commented", "/posts/7", {"post": 7})
    assert client.until("notification")["title"] == "then"
    stored: Any = redis_client.xrange(gateway.inbox, min=entry, max=entry)
    body = json.loads(stored[0][1][b"notification"])
    assert body["app_id"] == APP and body["users"] == [user] and body["id"] == "comment-1234"
    # Generated when not given, so that a retried XADD is stored once.
    last: Any = redis_client.xrevrange(gateway.inbox, count=1)
    assert json.loads(last[0][1][b"notification"])["id"]


def test_a_refused_notification_is_a_dead_letter(
    gateway: Gateway, redis_client: "redis.Redis"
) -> None:
    inbox = InboxPublisher(redis_client, APP, inbox=gateway.inbox)
    entry = inbox.notify("roger", "k" * 65)
    dead = eventually(
        lambda: [f for _, f in inbox.dead_letters() if f.get("id") == entry], "its dead letter"
    )
    assert "`kind` must have 1 to 64 bytes" in dead[0]["error"], dead
    with pytest.raises(ValueError):
        InboxPublisher(redis_client, inbox=gateway.inbox).notify("roger", "comment")


def test_the_async_inbox_notifies(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    user = _connected(client, signer)

    async def run() -> str:
        async with AsyncInboxPublisher(REDIS_URL, inbox=gateway.inbox) as inbox:
            return await inbox.notify([user], "comment", title="async", app_id=APP)

    entry = asyncio.run(run())
    assert entry and client.until("notification")["title"] == "async"
