"""The one HTTP layer of the package: a request described once (`Call`),
run by a sync or an asyncio transport with the same retry policy.

httpx does both with one API, keeps connections alive between requests
(a publisher sends many), and is typed; the two transports differ only
in how they wait.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Dict, Generic, Mapping, Optional, Type, TypeVar, Union

import httpx

from .errors import ChouquetteError, RateLimitedError, UnavailableError, error_from_answer

T = TypeVar("T")

#: Seconds for connecting and for each read; the internal listener is on
#: loopback or a private network, so an answer slower than this is a
#: gateway in trouble (and the request is retried, with its ids).
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Retry:
    """How a request is sent again when it may not have gone through.

    Retried: connection errors and timeouts (the answer was lost: the
    request may or may not have been handled), 503 `unavailable` (the
    broker refused it: nothing was accepted), and, when `rate_limited`,
    429 after the gateway's `Retry-After`. Never retried: any other 4xx
    (it would fail again) and 507 (a bound: retrying cannot help).

    Publishing is safe to retry only because every event carries an
    idempotency `id` from the first attempt on (the publishers add one):
    a repeat answers the first position with `duplicate` set.

    Waits are "full jitter" exponential: a random time in
    [0, min(`max_delay`, `base_delay` * 2**n)] before retry n+1, so many
    backends coming back together do not retry in step. `attempts` counts
    the first try: 1 disables retries.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    rate_limited: bool = True
    #: The longest `Retry-After` honoured: a longer one raises at once.
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts counts the first try: at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("Retry delays must not be negative")

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (0 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(retry, 32)))
        return random.uniform(0, ceiling)

    def wait_for(self, error: ChouquetteError, retry: int) -> Optional[float]:
        """How long to wait before sending again after `error`, or None
        when it must be raised."""
        if isinstance(error, RateLimitedError):
            if not self.rate_limited:
                return None
            after = error.retry_after if error.retry_after is not None else 1.0
            if after > self.max_retry_after:
                return None
            return after + self.backoff(0)
        if isinstance(error, UnavailableError) and error.status in (None, 503):
            return self.backoff(retry)
        return None


#: What every client uses unless given another policy.
DEFAULT_RETRY = Retry()
#: A policy that sends each request once.
NO_RETRY = Retry(attempts=1)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: `parse` turns the JSON of a 2xx answer (None for an
    empty body) into the caller's value."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Any = None
    params: Optional[Mapping[str, str]] = None


def _headers(key: str, extra: Mapping[str, str]) -> Dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    headers.update(extra)
    return headers


def _request(call: Call[Any]) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    if call.body is not None:
        kwargs["content"] = json.dumps(call.body, separators=(",", ":")).encode()
        kwargs["headers"] = {"Content-Type": "application/json"}
    if call.params is not None:
        kwargs["params"] = dict(call.params)
    return kwargs


def _answer(call: Call[T], response: httpx.Response) -> T:
    """The call's value, or the error the answer stands for."""
    try:
        decoded: Any = response.json() if response.content else None
    except ValueError:
        decoded = None
        if response.is_success:
            raise ChouquetteError(
                "the gateway answered something that is not JSON",
                status=response.status_code,
                code="bad_answer",
            ) from None
    if not response.is_success:
        raise error_from_answer(response.status_code, decoded, response.headers.get("Retry-After"))
    try:
        return call.parse(decoded)
    except (ValueError, TypeError, KeyError) as e:
        raise ChouquetteError(
            f"unexpected answer: {e}", status=response.status_code, code="bad_answer"
        ) from None


#: Transport errors after which the request may be sent again: the
#: network, a timeout, a connection closed before the answer. Others (an
#: unsupported URL scheme, a proxy refusing) would only fail again.
_RETRYABLE = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def _lost(error: httpx.TransportError) -> UnavailableError:
    return UnavailableError(f"no answer from the gateway: {error!r}", status=None)


Timeout = Union[float, httpx.Timeout]


class SyncTransport:
    """Runs calls with `httpx.Client`. Closes the client only if it made it."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.Client] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.retry = retry
        self._own = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._base = url.rstrip("/")
        self._headers = _headers(key, headers or {})

    def run(self, call: Call[T], retry: Optional[Retry] = None) -> T:
        policy = retry or self.retry
        request = _request(call)
        headers = {**self._headers, **request.pop("headers", {})}
        for attempt in range(policy.attempts):
            try:
                response = self._client.request(
                    call.method, self._base + call.path, headers=headers, **request
                )
                return _answer(call, response)
            except httpx.TransportError as e:
                if not isinstance(e, _RETRYABLE):
                    raise _lost(e) from e
                error: ChouquetteError = _lost(e)
            except ChouquetteError as e:
                error = e
            wait = policy.wait_for(error, attempt)
            if wait is None or attempt + 1 == policy.attempts:
                raise error
            time.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    def close(self) -> None:
        if self._own:
            self._client.close()


class AsyncTransport:
    """Runs calls with `httpx.AsyncClient`; waits with `asyncio.sleep`."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.AsyncClient] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.retry = retry
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._base = url.rstrip("/")
        self._headers = _headers(key, headers or {})

    async def run(self, call: Call[T], retry: Optional[Retry] = None) -> T:
        policy = retry or self.retry
        request = _request(call)
        headers = {**self._headers, **request.pop("headers", {})}
        for attempt in range(policy.attempts):
            try:
                response = await self._client.request(
                    call.method, self._base + call.path, headers=headers, **request
                )
                return _answer(call, response)
            except httpx.TransportError as e:
                if not isinstance(e, _RETRYABLE):
                    raise _lost(e) from e
                error: ChouquetteError = _lost(e)
            except ChouquetteError as e:
                error = e
            wait = policy.wait_for(error, attempt)
            if wait is None or attempt + 1 == policy.attempts:
                raise error
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()


Api = TypeVar("Api", bound="SyncApi")
AsyncApiT = TypeVar("AsyncApiT", bound="AsyncApi")


class SyncApi:
    """What every sync client of the package shares: one transport, closed
    with the client (``close()``, or leaving a ``with`` block)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.Client] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._http = SyncTransport(
            url, key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    def close(self) -> None:
        """Closes the HTTP client, unless it was given (then it is yours)."""
        self._http.close()

    def __enter__(self: Api) -> Api:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        trace: Optional[TracebackType],
    ) -> None:
        self.close()


class AsyncApi:
    """`SyncApi` for asyncio: ``aclose()``, or leaving an ``async with``."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.AsyncClient] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._http = AsyncTransport(
            url, key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    async def aclose(self) -> None:
        """Closes the HTTP client, unless it was given (then it is yours)."""
        await self._http.aclose()

    async def __aenter__(self: AsyncApiT) -> AsyncApiT:
        return self

    async def __aexit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        trace: Optional[TracebackType],
    ) -> None:
        await self.aclose()
