"""Publishing over the gateway's HTTP API, `POST /api/v1/publish`.

    from chouquette import Publisher, Event

    with Publisher("http://127.0.0.1:8081", api_key="...", app_id="bluelib") as pub:
        pub.publish(Event("bornes", "alarm", {"borne": "B1", "level": "critical"},
                          data={"uid": "B1", "status": "oh, oh..."}, key="borne:B1"))

Every event gets an idempotency `id` before the first attempt (unless it
has one), so the retries of `Retry` (connection lost, 503, 429) never
publish an event twice: a repeat answers the first position with
`duplicate=True`.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

import httpx

from ._http import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    AsyncApi,
    Call,
    Retry,
    SyncApi,
    Timeout,
)
from .events import EventLike, Position, event_json

PUBLISH = "/api/v1/publish"


def _one(answer: Any) -> Position:
    return Position.from_json(answer)


def _many(answer: Any) -> List[Position]:
    if not isinstance(answer, list):
        raise ValueError(f"not a list of positions: {answer!r}")
    return [Position.from_json(p) for p in answer]


def publish_call(event: EventLike, app_id: Optional[str]) -> Call[Position]:
    """The request publishing one event (with its idempotency id)."""
    return Call("POST", PUBLISH, _one, body=event_json(event, app_id, with_id=True))


def batch_call(events: Sequence[EventLike], app_id: Optional[str]) -> Call[List[Position]]:
    """The request publishing a batch: all or nothing, in order (the
    events of one channel get consecutive offsets)."""
    if not events:
        raise ValueError("an empty batch publishes nothing: the gateway refuses it")
    body = [event_json(e, app_id, with_id=True) for e in events]
    return Call("POST", PUBLISH, _many, body=body)


class Publisher(SyncApi):
    """Publishes with the app's API key on the internal listener (sync).

    `url` is the internal listener (`http://127.0.0.1:8081`), `app_id`
    the app filled into events that do not name one. Thread-safe (one
    httpx client, pooled connections); close it, or use it as a context
    manager. Give `client` to share an `httpx.Client` you manage.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        app_id: Optional[str] = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.Client] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.app_id = app_id
        super().__init__(
            url, api_key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    def publish(self, event: EventLike) -> Position:
        """Publishes one event; its position (raises a `ChouquetteError`)."""
        return self._http.run(publish_call(event, self.app_id))

    def publish_batch(self, events: Sequence[EventLike]) -> List[Position]:
        """Publishes events all or nothing, in order; one position each."""
        return self._http.run(batch_call(events, self.app_id))


class AsyncPublisher(AsyncApi):
    """`Publisher` for asyncio: the same methods, awaited."""

    def __init__(
        self,
        url: str,
        api_key: str,
        app_id: Optional[str] = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.AsyncClient] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.app_id = app_id
        super().__init__(
            url, api_key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    async def publish(self, event: EventLike) -> Position:
        """Publishes one event; its position (raises a `ChouquetteError`)."""
        return await self._http.run(publish_call(event, self.app_id))

    async def publish_batch(self, events: Sequence[EventLike]) -> List[Position]:
        """Publishes events all or nothing, in order; one position each."""
        return await self._http.run(batch_call(events, self.app_id))
