"""The admin API and backend-driven subscriptions on a real gateway."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from chouquette import (
    Admin,
    AsyncAdmin,
    AsyncUserSubscriptions,
    BadMessageError,
    Event,
    NotAllowedError,
    Publisher,
    TokenSigner,
    TooManySubscriptionsError,
    UserSubscriptions,
)

from conftest import ADMIN_KEY, API_KEY, APP, Client, Gateway, channel_name


def test_status_and_stats(gateway: Gateway) -> None:
    with Admin(gateway.internal, ADMIN_KEY) as admin:
        status = admin.status()
        assert status["broker"] == {"kind": "redis", "connected": True}
        assert APP in status["apps"] and isinstance(status["connections"], int)
        assert "publications_total" in admin.stats()
    with Admin(gateway.internal, API_KEY) as wrong:
        with pytest.raises(NotAllowedError):
            wrong.status()


def test_a_channel_switch_resets_its_subscribers_until_lifted(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    with Admin(gateway.internal, ADMIN_KEY, operator="pytest") as admin:
        off = admin.switch_off("channel", app=APP, channel=channel)
        assert (off.changed, off.enabled, off.affected_connections) == (True, False, 1)
        reset = client.until("reset")
        assert (reset["channel"], reset["reason"]) == (channel, "disabled")
        assert {"scope": "channel", "app": APP, "channel": channel} in admin.switches()
        refused = client.subscribe(signer.subscribe_message({channel: {"*": {}}}))
        assert refused["code"] == "disabled"
        on = admin.switch_on("channel", app=APP, channel=channel)
        assert on.changed and not admin.switch_on("channel", app=APP, channel=channel).changed
        with pytest.raises(BadMessageError):
            admin.switch_off("channel", app=APP)  # a channel switch names its channel
        with pytest.raises(ValueError):
            admin.switch_off("planet")
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"


def test_disconnect_closes_the_users_connections(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    client.send(signer.connect_message("to-disconnect"))
    client.until("ack")
    with Admin(gateway.internal, ADMIN_KEY) as admin:
        [connection] = admin.connections(APP, "to-disconnect")
        assert connection.transport == "ws"
        done = admin.disconnect(APP, "to-disconnect", reason="account closed")
        assert (done.disconnected, done.nodes) == (1, 1)
    with pytest.raises(ConnectionClosed) as closed:
        client.until("never")
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "account closed")


def test_backend_driven_subscriptions(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    channel = channel_name()
    client.send(signer.connect_message("ana"))
    client.until("ack")
    with UserSubscriptions(gateway.internal, API_KEY, APP) as subs, \
            Publisher(gateway.internal, API_KEY, APP) as pub:
        assert subs.subscribe_user("ana", channel, {"alarm": {"borne": "B1"}}) == 1
        subscribed = client.until("subscribed")
        assert subscribed["channel"] == channel
        pub.publish(Event(channel, "alarm", {"borne": "B2"}, data="not hers"))
        pub.publish(Event(channel, "alarm", {"borne": "B1"}, data="hers"))
        assert client.until("data")["data"] == "hers"
        assert subs.unsubscribe_user("ana", channel) == 1
        assert client.until("unsubscribed")["channel"] == channel
        with pytest.raises(BadMessageError):
            subs.subscribe_user("", channel, {"*": {}})


def test_too_many_backend_subscriptions(gateway: Gateway) -> None:
    with UserSubscriptions(gateway.internal, API_KEY, APP) as subs:
        for n in range(64):
            subs.subscribe_user("collector", f"c{n}", {"*": {}})
        with pytest.raises(TooManySubscriptionsError) as refused:
            subs.subscribe_user("collector", "c64", {"*": {}})
        assert refused.value.status == 507
        for n in range(64):
            subs.unsubscribe_user("collector", f"c{n}")


def test_the_async_twins(gateway: Gateway, client: Client, signer: TokenSigner) -> None:
    channel = channel_name()
    client.send(signer.connect_message("zoe"))
    client.until("ack")

    async def grant() -> None:
        async with AsyncAdmin(gateway.internal, ADMIN_KEY) as admin, \
                AsyncUserSubscriptions(gateway.internal, API_KEY, APP) as subs:
            assert (await admin.status())["apps"][APP]["connections"] >= 1
            assert [c.transport for c in await admin.connections(APP, "zoe")] == ["ws"]
            assert await subs.subscribe_user("zoe", channel, {"*": {}}) == 1

    async def publish() -> None:
        async with AsyncAdmin(gateway.internal, ADMIN_KEY) as admin:
            assert (await admin.publish(Event(channel, "k", app_id=APP, data="z"))).offset == 1

    asyncio.run(grant())
    # Live events follow the `subscribed` message's offset: publish after it.
    assert client.until("subscribed")["channel"] == channel
    asyncio.run(publish())
    assert client.until("data")["data"] == "z"
