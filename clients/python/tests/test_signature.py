"""Verifying the gateway's signed RPC calls: a real call through the
gateway to a backend that uses `verify_call`, and each refusal."""

from __future__ import annotations

import json

import pytest

from chouquette import SignatureError, TokenSigner, sign, verify_call, verify_signature

from conftest import APP, SECRETS, Client, RpcBackend, eventually

BODY = json.dumps({"method": "py.whoami", "args": [1], "kwargs": {"a": 2},
                   "user": {"app_id": APP, "user_id": "roger", "groups": ["staff"]}}).encode()
NOW = 1_800_000_000


def test_a_call_through_the_gateway_is_verified_with_its_caller(
    client: Client, signer: TokenSigner, rpc_backend: RpcBackend
) -> None:
    client.send(signer.connect_message("roger", groups=["staff"]))
    client.until("ack")
    client.send({"class": "call", "id": "c1", "method": "py.whoami", "args": ["x"]})
    answer = client.until("result")
    assert answer["id"] == "c1"
    assert answer["result"] == {"method": "py.whoami", "user_id": "roger",
                                "groups": ["staff"], "args": ["x"]}
    assert not rpc_backend.refused


def test_a_good_signature_and_its_call() -> None:
    header = sign(SECRETS[0], BODY, now=NOW)
    call = verify_call(SECRETS, header, BODY, now=NOW + 10)
    assert (call.method, call.args, call.kwargs) == ("py.whoami", [1], {"a": 2})
    assert (call.user.app_id, call.user.user_id, call.user.groups) == (APP, "roger", ["staff"])
    # Rotation: the gateway signs with its first secret, which may be the
    # second one listed here while the backend still puts the old first.
    assert verify_signature(list(reversed(SECRETS)), header, BODY, now=NOW) == NOW


@pytest.mark.parametrize(
    "header, body, now, why",
    [
        (sign(SECRETS[0], BODY, now=NOW), BODY + b" ", NOW, "does not match"),
        (sign("another-secret-0123456789abcdef-0123", BODY, now=NOW), BODY, NOW, "does not match"),
        (sign(SECRETS[0], BODY, now=NOW), BODY, NOW + 301, "replay window"),
        (sign(SECRETS[0], BODY, now=NOW + 301), BODY, NOW, "replay window"),
        ("", BODY, NOW, "no X-Chouquette-Signature"),
        (None, BODY, NOW, "no X-Chouquette-Signature"),
        ("t=1,v1", BODY, NOW, "malformed"),
        ("v1=00", BODY, NOW, "malformed"),
        ("t=x,v1=00", BODY, NOW, "malformed"),
        ("t=-5,v1=00", BODY, NOW, "malformed"),
    ],
)
def test_bad_replayed_and_malformed_signatures_are_refused(
    header: str, body: bytes, now: int, why: str
) -> None:
    with pytest.raises(SignatureError, match=why):
        verify_call(SECRETS, header, body, now=now)


def test_a_request_not_from_the_gateway_is_refused_by_the_backend(
    rpc_backend: RpcBackend,
) -> None:
    import httpx

    guessed = sign("guess-0123456789abcdef-0123456789", BODY)
    forged = httpx.post(rpc_backend.url, content=BODY,
                        headers={"X-Chouquette-Signature": guessed})
    assert forged.status_code == 401
    eventually(lambda: rpc_backend.refused, "the refusal is recorded")


def test_a_signed_body_of_another_shape_is_a_value_error() -> None:
    body = b'{"method": "x"}'
    with pytest.raises(ValueError):
        verify_call(SECRETS, sign(SECRETS[0], body, now=NOW), body, now=NOW)
