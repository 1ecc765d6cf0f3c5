"""The errors the gateway answers, one class per `code`.

Every JSON error of the gateway's internal listener is
`{"code": ..., "message": ...}` (docs/protocol.md, docs/admin.md); this
module turns it into an exception of the class registered for that code,
so callers catch what they can act on (`RateLimitedError`: wait;
`UnavailableError`: retry later; `BadMessageError`: fix the event) and
`ChouquetteError` for everything.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Type


class ChouquetteError(Exception):
    """Base of every error of this package.

    `status` is the HTTP status (None when no answer came: connection
    errors), `code` the gateway's error code, `message` its text, and
    `body` the whole decoded JSON answer (or {}).
    """

    code: str = "unknown"

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        if code is not None:
            self.code = code
        self.body: Dict[str, Any] = dict(body or {})

    def __str__(self) -> str:
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}"


class BadMessageError(ChouquetteError):
    """400/413 `bad_message`: the request's shape, a name, a keyword or its
    size. `index` names the event of a batch at fault (None for the whole
    body). Sending it again cannot succeed."""

    code = "bad_message"

    @property
    def index(self) -> Optional[int]:
        index = self.body.get("index")
        return index if isinstance(index, int) else None


class NotAllowedError(ChouquetteError):
    """401/403 `not_allowed`: no key, a wrong key, or an app this gateway
    does not have (the same answer, so app ids cannot be listed)."""

    code = "not_allowed"


class UnknownAppError(ChouquetteError):
    """404 `unknown_app`: admin routes naming an app that is not configured."""

    code = "unknown_app"


class RateLimitedError(ChouquetteError):
    """429 `rate_limited`: over the app's publish rate; nothing of the
    request was published. `retry_after` is the gateway's `Retry-After`
    in seconds (None when absent)."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message, status=status, code=code, body=body)
        self.retry_after = retry_after


class UnavailableError(ChouquetteError):
    """503 `unavailable` (the broker could not store it: nothing accepted
    past `published`), 507 (a bound was hit: state keys, channels), or
    500 (an admin state file could not be written); also raised when
    the gateway could not be reached at all (`status` None).

    `published` lists the positions of the events of a batch that went
    out before the refusal (the gateway's `published` field)."""

    code = "unavailable"

    @property
    def published(self) -> List[Dict[str, Any]]:
        published = self.body.get("published")
        return [p for p in published if isinstance(p, dict)] if isinstance(published, list) else []


class TooManySubscriptionsError(ChouquetteError):
    """507 `too_many_subscriptions`: a user already holds the most backend
    subscriptions the gateway keeps for one user (64)."""

    code = "too_many_subscriptions"


class SignatureError(ChouquetteError):
    """A request claiming to come from the gateway does not carry a valid
    `X-Chouquette-Signature`: malformed, signed with no known secret, or
    outside the replay window. Answer it 401."""

    code = "bad_signature"


class NotConnectedError(ChouquetteError):
    """A call to a user who has no connection on any gateway (404): said at
    once, nothing was sent."""

    code = "not_connected"


class CallTimeoutError(ChouquetteError):
    """No connection of the user answered a call in time (504)."""

    code = "timeout"


class DeviceOfflineError(ChouquetteError):
    """A command to a device that is not connected (404 `offline`): said at
    once, nothing was sent. `last_seen` is when the gateway last heard from
    it (ISO 8601 UTC), or None when not known (docs/devices.md)."""

    code = "offline"

    @property
    def last_seen(self) -> Optional[str]:
        seen = self.body.get("last_seen")
        return seen if isinstance(seen, str) else None


class TooLargeError(ChouquetteError):
    """Over a bound the gateway keeps (507, e.g. a lattice's keys); nothing
    was merged or stored."""

    code = "too_large"


class ClientCallError(ChouquetteError):
    """The user's client answered a call with its own `error`: `code` and
    `message` are the client's (the call itself went through, HTTP 200)."""

    code = "client_error"


#: The exception class of each code the gateway answers on its internal
#: listener. A code not listed here (a newer gateway's) raises the base
#: `ChouquetteError` with that `code`.
ERRORS: Dict[str, Type[ChouquetteError]] = {
    cls.code: cls
    for cls in (
        BadMessageError,
        NotAllowedError,
        UnknownAppError,
        RateLimitedError,
        UnavailableError,
        TooManySubscriptionsError,
        NotConnectedError,
        CallTimeoutError,
        TooLargeError,
        DeviceOfflineError,
    )
}


def error_from_answer(
    status: int, body: Any, retry_after: Optional[str] = None
) -> ChouquetteError:
    """The exception for an error answer: its JSON `body` (anything: a
    proxy may answer HTML) and, for 429, its `Retry-After` header."""
    decoded: Dict[str, Any] = body if isinstance(body, dict) else {}
    code = decoded.get("code")
    message = decoded.get("message")
    if not isinstance(code, str):
        code = "unknown"
    if not isinstance(message, str):
        message = f"the gateway answered HTTP {status}"
    cls = ERRORS.get(code, ChouquetteError)
    if cls is RateLimitedError:
        return RateLimitedError(
            message, status=status, code=code, body=decoded, retry_after=_seconds(retry_after)
        )
    return cls(message, status=status, code=code, body=decoded)


def _seconds(value: Optional[str]) -> Optional[float]:
    """`Retry-After` as seconds; the HTTP-date form is not used by the
    gateway and reads as absent."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
