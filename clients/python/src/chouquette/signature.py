"""Verifying requests the gateway sends to your backend (docs/rpc.md).

The gateway POSTs each client `call` routed to you with

    X-Chouquette-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

signed with the app's **first** secret. `verify_call` checks it against
each of the secrets you give (so a rotation that puts a new secret first
on the gateway keeps working while both are listed here) and that `t` is
within the replay window, then returns the call with its caller:

    call = verify_call(settings.CHOUQUETTE_SECRETS,
                       request.headers.get("X-Chouquette-Signature", ""), request.body)
    call.user.user_id   # the `sub` of the caller's `connect` token

`verify_signature` is the same check without reading the body, for any
other signed request (webhooks use this scheme).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import SignatureError

#: The header the gateway signs with.
HEADER = "X-Chouquette-Signature"
#: Signatures older or newer than this are refused: a captured request
#: cannot be replayed after it. Keep the backend's clock in sync (NTP).
REPLAY_WINDOW_SECONDS = 300

Secrets = Union[str, bytes, Sequence[Union[str, bytes]]]


def _keys(secrets: Secrets) -> List[bytes]:
    listed = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
    keys = [s.encode() if isinstance(s, str) else bytes(s) for s in listed]
    if not keys or not all(keys):
        raise ValueError("secrets: at least one non-empty secret")
    return keys


def _body(body: Union[bytes, str]) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def sign(secret: Union[str, bytes], body: Union[bytes, str], now: Optional[float] = None) -> str:
    """The header value the gateway would send for `body` at `now`."""
    key = _keys(secret)[0]
    t = int(time.time() if now is None else now)
    mac = hmac.new(key, str(t).encode() + b"." + _body(body), hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def _parse(header: str) -> Tuple[int, List[str]]:
    timestamp: Optional[int] = None
    given: List[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if name == "t":
            if not value.isdigit() or timestamp is not None:
                raise SignatureError("malformed signature header")
            timestamp = int(value)
        elif name == "v1":
            given.append(value)
    if timestamp is None or not given:
        raise SignatureError("malformed signature header")
    return timestamp, given


def verify_signature(
    secrets: Secrets,
    header: Optional[str],
    body: Union[bytes, str],
    now: Optional[float] = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> int:
    """Checks that `header` signs `body` (the exact bytes received,
    before any parsing) with one of `secrets`, at a time within `window`
    seconds of `now`; returns that time. Raises `SignatureError`."""
    if not header:
        raise SignatureError(f"no {HEADER} header")
    timestamp, given = _parse(header)
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > window:
        raise SignatureError("signature outside the replay window")
    signed = str(timestamp).encode() + b"." + _body(body)
    for key in _keys(secrets):
        expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
        # Every candidate is compared, in constant time each.
        if any(hmac.compare_digest(expected, g) for g in given):
            return timestamp
    raise SignatureError("signature does not match")


@dataclass(frozen=True)
class Caller:
    """Who made a call: the identity of the client's `connect` token."""

    app_id: str
    user_id: str
    groups: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """A verified RPC call: its method, arguments and `user`, the caller."""

    method: str
    args: List[Any]
    kwargs: Dict[str, Any]
    user: Caller


def verify_call(
    secrets: Secrets,
    header: Optional[str],
    body: Union[bytes, str],
    now: Optional[float] = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> Call:
    """Verifies the signature (`verify_signature`), then reads the call:
    `{"method", "args", "kwargs", "user": {"app_id", "user_id", "groups"}}`.
    Raises `SignatureError` for a bad signature and ValueError for a
    signed body of another shape (a gateway newer than this package)."""
    verify_signature(secrets, header, body, now, window)
    try:
        decoded = json.loads(_body(body))
    except ValueError:
        raise ValueError("the signed body is not JSON") from None
    if not isinstance(decoded, dict):
        raise ValueError("the signed body is not a call object")
    user = decoded.get("user")
    method = decoded.get("method")
    args = decoded.get("args", [])
    kwargs = decoded.get("kwargs", {})
    if (
        not isinstance(method, str)
        or not isinstance(args, list)
        or not isinstance(kwargs, dict)
        or not isinstance(user, dict)
        or not isinstance(user.get("app_id"), str)
        or not isinstance(user.get("user_id"), str)
    ):
        raise ValueError("the signed body is not a call object")
    groups = user.get("groups", [])
    caller = Caller(
        app_id=user["app_id"],
        user_id=user["user_id"],
        groups=[g for g in groups if isinstance(g, str)] if isinstance(groups, list) else [],
    )
    return Call(method=method, args=args, kwargs=kwargs, user=caller)
