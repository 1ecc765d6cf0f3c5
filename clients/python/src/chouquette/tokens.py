"""Signing what clients carry to the gateway (PROTOCOL.md sections 3 and 8).

The backend decides what a user may see and signs it; the browser only
forwards the signed message, and the gateway verifies it:

    signer = TokenSigner(app_id="bluelib", secrets=["s3cret-current", "s3cret-previous"])
    message = signer.subscribe_message(
        {"bornes": {"alarm": {"borne": ["B1"], "level": "critical"}, "status": {"borne": "B1"}}},
        user="roger", groups=["vb"], ttl=3600)

**Key rotation.** `secrets` is the app's list, as in the gateway's
`[[apps]] secrets`: tokens are signed with the **first**, and the gateway
verifies a token against **each** of its secrets. To rotate: add the new
secret second on every gateway, then first on the backends and the
gateways (new tokens use it, live ones still verify with the old), then
drop the old one once every token signed with it has expired.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jwt

#: An allowed value of a filter constraint (`12` matches `id:12`).
FilterValue = Union[str, int, float, bool]
#: A filter (docs/protocol.md "Filters"): event kind (or "*") -> keyword
#: name -> one allowed value or a list of them. `{}` for a kind: every
#: event of it.
Filters = Mapping[str, Mapping[str, Union[FilterValue, Sequence[FilterValue]]]]

#: Bounds the gateway enforces on a filter; checked here too so that a
#: backend learns of a mistake where it makes it, not from a client's
#: `invalid_token`.
MAX_FILTER_KINDS = 64
MAX_CONSTRAINTS = 32
MAX_ALLOWED_VALUES = 1024
#: Bounds of the `publish` claim (docs/protocol.md "Client publish").
MAX_PUBLISH_CHANNELS = 64
MAX_PINNED_KEYWORDS = 64

#: One hour: the usual lifetime of a subscription token; the page asks its
#: backend again before it ends (and subscribes again, with `since`).
DEFAULT_TTL = 3600


def check_filters(filters: Filters) -> Dict[str, Dict[str, Any]]:
    """`filters` as plain JSON, or ValueError naming what the gateway
    would refuse."""
    if not isinstance(filters, Mapping):
        raise ValueError("filters: an object of event kind -> constraints")
    if len(filters) > MAX_FILTER_KINDS:
        raise ValueError(f"filters: at most {MAX_FILTER_KINDS} event kinds")
    out: Dict[str, Dict[str, Any]] = {}
    for kind, constraints in filters.items():
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"filters: event kind {kind!r} is not a name")
        if not isinstance(constraints, Mapping):
            raise ValueError(f"filters[{kind!r}]: an object of keyword name -> allowed value(s)")
        if len(constraints) > MAX_CONSTRAINTS:
            raise ValueError(f"filters[{kind!r}]: at most {MAX_CONSTRAINTS} constraints")
        entry: Dict[str, Any] = {}
        for name, allowed in constraints.items():
            if isinstance(allowed, (str, int, float, bool)):
                entry[name] = allowed
                continue
            if not isinstance(allowed, Sequence):
                raise ValueError(f"filters[{kind!r}][{name!r}]: a value or a list of values")
            values = list(allowed)
            if len(values) > MAX_ALLOWED_VALUES:
                raise ValueError(
                    f"filters[{kind!r}][{name!r}]: at most {MAX_ALLOWED_VALUES} allowed values"
                )
            for v in values:
                if not isinstance(v, (str, int, float, bool)):
                    raise ValueError(f"filters[{kind!r}][{name!r}]: {v!r} is not a scalar")
            entry[name] = values
        out[kind] = entry
    return out


def check_publish_claim(claim: Mapping[str, Sequence[str]]) -> Dict[str, Any]:
    """The `publish` claim (channel -> pinned `name:value` keywords) as
    JSON, or ValueError for a shape the gateway refuses."""
    if not isinstance(claim, Mapping):
        raise ValueError("publish: an object of channel -> pinned keywords")
    if len(claim) > MAX_PUBLISH_CHANNELS:
        raise ValueError(f"publish: at most {MAX_PUBLISH_CHANNELS} channels")
    out: Dict[str, Any] = {}
    for channel, pins in claim.items():
        if isinstance(pins, str) or not isinstance(pins, Sequence):
            raise ValueError(f"publish[{channel!r}]: a list of 'name:value' keywords")
        pinned = list(pins)
        if len(pinned) > MAX_PINNED_KEYWORDS:
            raise ValueError(f"publish[{channel!r}]: at most {MAX_PINNED_KEYWORDS} keywords")
        for keyword in pinned:
            if not isinstance(keyword, str) or ":" not in keyword or keyword.startswith(":"):
                raise ValueError(f"publish[{channel!r}]: {keyword!r} is not 'name:value'")
        out[channel] = pinned
    return out


class TokenSigner:
    """Signs an app's subscription and `connect` tokens (HS256).

    `secrets`: the app's secrets, newest first (one string is one secret);
    the first signs (module docstring: rotation). `exp` is exactly
    `now + ttl`: the gateway adds its own `[tokens] leeway` for clock skew.
    """

    def __init__(self, app_id: str, secrets: Union[str, Sequence[str]]) -> None:
        listed = [secrets] if isinstance(secrets, str) else list(secrets)
        if not listed or not all(isinstance(s, str) and s for s in listed):
            raise ValueError("secrets: at least one non-empty secret")
        if not app_id:
            raise ValueError("app_id must not be empty")
        self.app_id = app_id
        self.secrets = listed

    def _sign(self, claims: Dict[str, Any], ttl: Optional[int], now: Optional[float]) -> str:
        if ttl is not None:
            if ttl <= 0:
                raise ValueError("ttl: seconds, more than 0 (None: no exp)")
            issued = int(time.time() if now is None else now)
            claims["exp"] = issued + int(ttl)
        return jwt.encode(claims, self.secrets[0], algorithm="HS256")

    def subscription_token(
        self,
        channel: str,
        filters: Filters,
        *,
        user: Optional[str] = None,
        groups: Optional[Sequence[str]] = None,
        ttl: Optional[int] = DEFAULT_TTL,
        now: Optional[float] = None,
    ) -> str:
        """The token of one channel's subscription: `filters` (what the
        holder may see), `user` (`sub`: per-user limits, kill switches,
        disconnects), `groups`, and `exp` `ttl` seconds from now
        (`ttl=None`: no `exp`, refused unless the app sets
        `allow_tokens_without_exp`)."""
        if not channel:
            raise ValueError("channel must not be empty")
        claims: Dict[str, Any] = {
            "app_id": self.app_id,
            "channel": channel,
            "filters": check_filters(filters),
        }
        if user is not None:
            claims["sub"] = user
        if groups is not None:
            claims["groups"] = list(groups)
        return self._sign(claims, ttl, now)

    def subscribe_message(
        self,
        channels: Mapping[str, Filters],
        *,
        user: Optional[str] = None,
        groups: Optional[Sequence[str]] = None,
        ttl: Optional[int] = DEFAULT_TTL,
        now: Optional[float] = None,
    ) -> Dict[str, Any]:
        """The subscribe message of PROTOCOL.md section 3 for `channels`
        (channel -> filters), each with its own token: what a
        `get_subscription` view answers and the page sends unchanged."""
        if not channels:
            raise ValueError("channels: at least one channel")
        return {
            "class": "subscribe",
            "app_id": self.app_id,
            "channels": {
                channel: {
                    "filters": self.subscription_token(
                        channel, filters, user=user, groups=groups, ttl=ttl, now=now
                    )
                }
                for channel, filters in channels.items()
            },
        }

    def connect_token(
        self,
        user: str,
        *,
        groups: Optional[Sequence[str]] = None,
        publish: Optional[Mapping[str, Sequence[str]]] = None,
        ttl: Optional[int] = DEFAULT_TTL,
        now: Optional[float] = None,
    ) -> str:
        """The token of a `connect` message: the connection's identity
        (`sub` = `user`, `groups`), needed for calls, backend-driven
        subscriptions and client publish. `publish` (channel -> pinned
        keywords, e.g. `{"devices": ["device:D1"]}`) lets the holder
        publish there, only with those keywords; without it, not at all."""
        if not user:
            raise ValueError("user must not be empty")
        claims: Dict[str, Any] = {"app_id": self.app_id, "sub": user}
        if groups is not None:
            claims["groups"] = list(groups)
        if publish is not None:
            claims["publish"] = check_publish_claim(publish)
        return self._sign(claims, ttl, now)

    def connect_message(
        self,
        user: str,
        *,
        groups: Optional[Sequence[str]] = None,
        publish: Optional[Mapping[str, Sequence[str]]] = None,
        ttl: Optional[int] = DEFAULT_TTL,
        now: Optional[float] = None,
    ) -> Dict[str, Any]:
        """`{"class": "connect", "app_id": ..., "token": ...}` for `user`."""
        token = self.connect_token(user, groups=groups, publish=publish, ttl=ttl, now=now)
        return {"class": "connect", "app_id": self.app_id, "token": token}
