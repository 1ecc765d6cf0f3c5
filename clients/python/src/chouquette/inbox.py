"""Publishing through the gateways' Redis inbox (docs/deployment.md,
"Publishing through Redis: the inbox"), for backends that already talk
to Redis: one `XADD` to the inbox stream, read by one gateway of the
consumer group, published exactly once.

    inbox = InboxPublisher("redis://127.0.0.1:6379", app_id="bluelib")
    inbox.publish(Event("bornes", "alarm", ["borne:B1"], data={...}))

Notifications to users go the same way (docs/notifications.md, "Through
the Redis inbox"): stored pending for each user until a client
acknowledges them, exactly as `POST /api/v1/notify` does:

    inbox.notify(["roger"], "comment", title="New comment", link="/posts/7")

An entry holds one event as JSON in its field `event`, a batch as a
JSON array in `events` (published in order, all or nothing), or a
notification in `notification` (the body of `POST /api/v1/notify`). Refused
entries go to `<inbox>:dead` (fields `id`: the entry's id, `error`: why,
`entry`: its JSON): nothing is answered, so check there (`dead_letters`). Needs the `redis` extra
(`pip install "chouquette[redis]"`).

Each event and notification gets an idempotency `id` before the first
`XADD`: when the link drops after Redis stored an entry and it is sent
again, the gateway publishes its events once (within
`broker.dedup_window`) and stores the notification once (within the app's
`notifications.expire_after`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import redis
import redis.asyncio

from ._http import DEFAULT_RETRY, Retry
from .errors import UnavailableError
from .events import EventLike, event_json
from .users import notification_json

#: The gateway's default `[broker] inbox`.
DEFAULT_INBOX = "chq:inbox"


def _fields(events: Sequence[EventLike], app_id: Optional[str]) -> Dict[str, str]:
    if not events:
        raise ValueError("an empty batch publishes nothing")
    body = [event_json(e, app_id, with_id=True) for e in events]
    if len(body) == 1:
        return {"event": json.dumps(body[0], separators=(",", ":"))}
    return {"events": json.dumps(body, separators=(",", ":"))}


def _notification_fields(
    app_id: Optional[str],
    users: Union[str, Sequence[str]],
    kind: str,
    title: str,
    body: str,
    link: Optional[str],
    data: Any,
    id: Optional[str],
) -> Dict[str, str]:
    if app_id is None:
        raise ValueError("a notification needs an app: give app_id to the publisher or the call")
    request = notification_json(app_id, users, kind, title, body, link, data, id)
    return {"notification": json.dumps(request, separators=(",", ":"))}


def _text(value: Union[bytes, str]) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dead(entries: Any) -> List[Tuple[str, Dict[str, str]]]:
    out: List[Tuple[str, Dict[str, str]]] = []
    for entry_id, fields in entries:
        out.append((_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}))
    return out


#: Errors after which an `XADD` may or may not have been stored: sent
#: again (the ids make that safe).
_LOST = (redis.ConnectionError, redis.TimeoutError)


class InboxPublisher:
    """Appends events to the inbox stream with redis-py (sync).

    `redis_client`: a `redis.Redis` or a URL. `maxlen`: trim the stream to
    about that many entries on each append (`XADD MAXLEN ~`); None (the
    default) never trims, since trimming drops entries no gateway has
    read yet: set it only above what the gateways can fall behind by.
    """

    def __init__(
        self,
        redis_client: Union[str, "redis.Redis"],
        app_id: Optional[str] = None,
        *,
        inbox: str = DEFAULT_INBOX,
        maxlen: Optional[int] = None,
        retry: Retry = DEFAULT_RETRY,
    ) -> None:
        self._own = isinstance(redis_client, str)
        self.redis: redis.Redis = (
            redis.Redis.from_url(redis_client) if isinstance(redis_client, str) else redis_client
        )
        self.app_id = app_id
        self.inbox = inbox
        self.maxlen = maxlen
        self.retry = retry

    def _xadd(self, fields: Dict[str, str]) -> str:
        for attempt in range(self.retry.attempts):
            try:
                entry: Union[bytes, str] = self.redis.xadd(  # type: ignore[assignment]
                    self.inbox, fields,  # type: ignore[arg-type]
                    maxlen=self.maxlen, approximate=True,
                )
                return _text(entry)
            except _LOST as e:
                if attempt + 1 == self.retry.attempts:
                    raise UnavailableError(f"Redis inbox unreachable: {e!r}") from e
                time.sleep(self.retry.backoff(attempt))
            except redis.RedisError as e:
                # Refused by Redis itself (authentication, a key of another
                # type): sending it again would fail the same way.
                raise UnavailableError(f"Redis refused the inbox entry: {e!r}") from e
        raise AssertionError("unreachable: the loop returns or raises")

    def publish(self, event: EventLike) -> str:
        """Appends one event; returns the entry's stream id."""
        return self._xadd(_fields([event], self.app_id))

    def publish_batch(self, events: Sequence[EventLike]) -> str:
        """Appends a batch as one entry (published in order, all or
        nothing); returns the entry's stream id."""
        return self._xadd(_fields(events, self.app_id))

    def notify(
        self,
        users: Union[str, Sequence[str]],
        kind: str,
        *,
        title: str = "",
        body: str = "",
        link: Optional[str] = None,
        data: Any = None,
        id: Optional[str] = None,
        app_id: Optional[str] = None,
    ) -> str:
        """Appends a notification to `users` (the publisher's app unless
        `app_id`); returns the entry's stream id. Refused (a field past its
        bound, an unknown app): a dead letter, as for events."""
        app = app_id or self.app_id
        return self._xadd(_notification_fields(app, users, kind, title, body, link, data, id))

    def dead_letters(self, count: int = 100) -> List[Tuple[str, Dict[str, str]]]:
        """The last `count` refused entries, newest first: `(dead id,
        fields)`, the fields being `id` (the refused entry's id, as
        `publish` returned it), `error` and `entry`."""
        return _dead(self.redis.xrevrange(self.inbox + ":dead", count=count))

    def close(self) -> None:
        """Closes the Redis client if this publisher made it (from a URL)."""
        if self._own:
            self.redis.close()

    def __enter__(self) -> "InboxPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncInboxPublisher:
    """`InboxPublisher` for asyncio, with `redis.asyncio`."""

    def __init__(
        self,
        redis_client: Union[str, "redis.asyncio.Redis"],
        app_id: Optional[str] = None,
        *,
        inbox: str = DEFAULT_INBOX,
        maxlen: Optional[int] = None,
        retry: Retry = DEFAULT_RETRY,
    ) -> None:
        self._own = isinstance(redis_client, str)
        self.redis: redis.asyncio.Redis = (
            redis.asyncio.Redis.from_url(redis_client)
            if isinstance(redis_client, str)
            else redis_client
        )
        self.app_id = app_id
        self.inbox = inbox
        self.maxlen = maxlen
        self.retry = retry

    async def _xadd(self, fields: Dict[str, str]) -> str:
        for attempt in range(self.retry.attempts):
            try:
                entry = await self.redis.xadd(
                    self.inbox, fields,  # type: ignore[arg-type]
                    maxlen=self.maxlen, approximate=True,
                )
                return _text(entry)
            except _LOST as e:
                if attempt + 1 == self.retry.attempts:
                    raise UnavailableError(f"Redis inbox unreachable: {e!r}") from e
                await asyncio.sleep(self.retry.backoff(attempt))
            except redis.RedisError as e:
                # Refused by Redis itself (authentication, a key of another
                # type): sending it again would fail the same way.
                raise UnavailableError(f"Redis refused the inbox entry: {e!r}") from e
        raise AssertionError("unreachable: the loop returns or raises")

    async def publish(self, event: EventLike) -> str:
        """Appends one event; returns the entry's stream id."""
        return await self._xadd(_fields([event], self.app_id))

    async def publish_batch(self, events: Sequence[EventLike]) -> str:
        """Appends a batch as one entry; returns the entry's stream id."""
        return await self._xadd(_fields(events, self.app_id))

    async def notify(
        self,
        users: Union[str, Sequence[str]],
        kind: str,
        *,
        title: str = "",
        body: str = "",
        link: Optional[str] = None,
        data: Any = None,
        id: Optional[str] = None,
        app_id: Optional[str] = None,
    ) -> str:
        """Appends a notification to `users`; returns the entry's stream id
        (see the sync one)."""
        app = app_id or self.app_id
        return await self._xadd(
            _notification_fields(app, users, kind, title, body, link, data, id)
        )

    async def dead_letters(self, count: int = 100) -> List[Tuple[str, Dict[str, str]]]:
        """The last `count` refused entries, newest first (see the sync one)."""
        return _dead(await self.redis.xrevrange(self.inbox + ":dead", count=count))

    async def aclose(self) -> None:
        """Closes the Redis client if this publisher made it (from a URL)."""
        if self._own:
            await self.redis.aclose()

    async def __aenter__(self) -> "AsyncInboxPublisher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
