"""Signed subscriptions and connect tokens, checked by a real gateway."""

from __future__ import annotations

import time

import jwt
import pytest

from chouquette import Event, Publisher, TokenSigner
from chouquette.tokens import check_filters, check_publish_claim

from conftest import API_KEY, APP, SECRETS, Client, Gateway, channel_name


def test_a_signed_subscription_receives_what_its_filter_allows(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    channel = channel_name("bornes")
    message = signer.subscribe_message(
        {channel: {"alarm": {"borne": ["B1"], "level": "critical"}}}, user="roger", groups=["vb"]
    )
    ack = client.subscribe(message)
    assert ack["class"] == "ack", ack
    assert ack["channels"][channel]["offset"] == 0, ack

    with Publisher(gateway.internal, API_KEY, APP) as pub:
        # B2 is not Roger's, a minor alarm is not critical: neither arrives.
        pub.publish(Event(channel, "alarm", {"borne": "B2", "level": "critical"}, data=1))
        pub.publish(Event(channel, "alarm", {"borne": "B1", "level": "minor"}, data=2))
        mine = pub.publish(Event(channel, "alarm", {"borne": "B1", "level": "critical"},
                                 data={"uid": "B1", "status": "oh, oh..."}))
    data = client.until("data")
    assert (data["offset"], data["data"]) == (mine.offset, {"uid": "B1", "status": "oh, oh..."})
    assert mine.offset == 3 and data["keywords"] == ["borne:B1", "level:critical"]


def test_the_claims_are_those_of_protocol_section_3(signer: TokenSigner) -> None:
    now = 1_800_000_000
    token = signer.subscription_token("bornes", {"status": {}}, user="roger",
                                      groups=["vb"], ttl=60, now=now)
    claims = jwt.decode(token, SECRETS[0], algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"app_id": APP, "channel": "bornes", "filters": {"status": {}},
                      "sub": "roger", "groups": ["vb"], "exp": now + 60}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    bare = signer.subscription_token("bornes", {"*": {}}, ttl=None)
    assert "exp" not in jwt.decode(bare, SECRETS[0], algorithms=["HS256"])


def test_the_gateway_verifies_against_each_secret_and_refuses_others(
    gateway: Gateway, client: Client
) -> None:
    """Rotation: a token signed with the second secret still verifies."""
    channel = channel_name()
    old = TokenSigner(APP, SECRETS[1:])
    assert client.subscribe(old.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    stranger = TokenSigner(APP, ["not-a-secret-of-the-app-0123456789abcdef"])
    refused = client.subscribe(stranger.subscribe_message({channel_name(): {"*": {}}}))
    assert refused["code"] == "invalid_token", refused


def test_an_expired_token_is_refused(client: Client, signer: TokenSigner) -> None:
    message = signer.subscribe_message({channel_name(): {"*": {}}}, ttl=60,
                                       now=time.time() - 3600)
    assert client.subscribe(message)["code"] == "token_expired"


def test_a_connect_token_gives_an_identity_and_pins_what_it_publishes(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    channel = channel_name("devices")
    client.send(signer.connect_message("D1", groups=["fleet"],
                                       publish={channel: ["device:D1"]}))
    assert client.until("ack")["class"] == "ack"
    client.send({"class": "publish", "uuid": "p1", "app_id": APP, "channel": channel,
                 "event_kind": "status", "keywords": ["device:D1"], "data": {"t": 21}})
    ack = client.until("ack")
    assert (ack["ref"], ack["offset"]) == ("p1", 1), ack
    client.send({"class": "publish", "uuid": "p2", "app_id": APP, "channel": channel,
                 "event_kind": "status", "keywords": ["device:D2"], "data": {"t": 0}})
    refused = client.until("error")
    assert (refused["ref"], refused["code"]) == ("p2", "not_allowed"), refused


def test_a_connect_token_without_publish_claim_may_not_publish(
    client: Client, signer: TokenSigner
) -> None:
    client.send(signer.connect_message("roger"))
    client.until("ack")
    client.send({"class": "publish", "uuid": "p", "app_id": APP, "channel": channel_name(),
                 "event_kind": "status", "keywords": [], "data": None})
    assert client.until("error")["code"] == "not_allowed"


@pytest.mark.parametrize(
    "filters",
    [
        {"alarm": ["B1"]},
        {"alarm": {"borne": {"nested": 1}}},
        {"alarm": {"borne": [None]}},
        {f"k{i}": {} for i in range(65)},
        {"alarm": {"borne": list(range(1025))}},
    ],
)
def test_filters_the_gateway_would_refuse_are_refused_when_signing(filters: object) -> None:
    with pytest.raises(ValueError):
        check_filters(filters)  # type: ignore[arg-type]


def test_publish_claims_of_another_shape_are_refused_when_signing() -> None:
    assert check_publish_claim({"devices": ["device:D1"], "chat": []}) == {
        "devices": ["device:D1"], "chat": []}
    for bad in ({"devices": "device:D1"}, {"devices": ["D1"]}, {"devices": [":x"]}):
        with pytest.raises(ValueError):
            check_publish_claim(bad)
    with pytest.raises(ValueError):
        TokenSigner(APP, [])
