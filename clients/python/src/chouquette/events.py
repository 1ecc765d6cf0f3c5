"""Events as the gateway takes them, and the positions it answers.

An event is what `POST /api/v1/publish` and the Redis inbox take
(docs/protocol.md "Publishing"): `app_id`, `channel`, `event_kind`,
`keywords` (`name:value` strings that filters match on), optional `key`
(last known state), `data` (any JSON) and the optional idempotency `id`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

#: A keyword value: filters compare the text after the first colon, so
#: numbers and booleans are written as JSON writes them (`id:12`, `ok:true`).
KeywordValue = Union[str, int, float, bool]

#: Keywords as `["borne:B1", "level:critical"]` or as a mapping
#: `{"borne": "B1", "level": "critical"}` (a list value gives one keyword
#: per item: `{"tag": ["a", "b"]}` is `["tag:a", "tag:b"]`).
Keywords = Union[Sequence[str], Mapping[str, Union[KeywordValue, Sequence[KeywordValue]]]]


def _text(value: KeywordValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def keywords(words: Keywords) -> List[str]:
    """`words` as the list of `name:value` strings the gateway takes."""
    if isinstance(words, Mapping):
        out: List[str] = []
        for name, value in words.items():
            if isinstance(value, (str, int, float, bool)):
                out.append(f"{name}:{_text(value)}")
            else:
                out.extend(f"{name}:{_text(v)}" for v in value)
        return out
    if isinstance(words, str):
        raise TypeError("keywords: a list of 'name:value' strings, not one string")
    return [str(w) for w in words]


@dataclass(frozen=True)
class Event:
    """One event. `app_id` may be left out: the publisher fills in its own.

    Give `id` when the event has a natural identity (a database row and
    its version, a message id): a repeat within the gateway's dedup
    window is then published once, whoever sends it. Without one, the
    publishers generate one per event before the first attempt, so their
    own retries never publish twice.
    """

    channel: str
    event_kind: str
    keywords: Keywords = ()
    data: Any = None
    key: Optional[str] = None
    id: Optional[str] = None
    app_id: Optional[str] = None

    def to_json(self, app_id: Optional[str] = None) -> Dict[str, Any]:
        """The JSON object the gateway takes, with `app_id` defaulting to
        the given one."""
        app = self.app_id or app_id
        if not app:
            raise ValueError("event without app_id: give it to the event or the publisher")
        out: Dict[str, Any] = {
            "app_id": app,
            "channel": self.channel,
            "event_kind": self.event_kind,
            "keywords": keywords(self.keywords),
            "data": self.data,
        }
        if self.key is not None:
            out["key"] = self.key
        if self.id is not None:
            out["id"] = self.id
        return out


#: What the publishers take: an `Event`, or a ready JSON object.
EventLike = Union[Event, Mapping[str, Any]]


def event_json(event: EventLike, app_id: Optional[str], *, with_id: bool) -> Dict[str, Any]:
    """`event` as a JSON object with `app_id` set, and, when `with_id`,
    an idempotency `id` (a new UUID when it has none)."""
    if isinstance(event, Event):
        out = event.to_json(app_id)
    else:
        out = dict(event)
        if "app_id" not in out:
            if not app_id:
                raise ValueError("event without app_id: give it to the event or the publisher")
            out["app_id"] = app_id
    if with_id and not out.get("id"):
        out["id"] = new_id()
    return out


def new_id() -> str:
    """A fresh idempotency id (a v4 UUID: 36 bytes, within the 1–128 allowed)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Position:
    """Where a published event went: its channel's `epoch` and `offset`.
    `duplicate` is true when its `id` had been published already: the
    position is the first one's, and nothing was published again."""

    epoch: str
    offset: int
    duplicate: bool = False
    extra: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Any) -> "Position":
        if not isinstance(value, dict):
            raise ValueError(f"not a position: {value!r}")
        epoch, offset = value.get("epoch"), value.get("offset")
        if not isinstance(epoch, str) or not isinstance(offset, int):
            raise ValueError(f"not a position: {value!r}")
        known = {"epoch", "offset", "duplicate"}
        return cls(
            epoch=epoch,
            offset=offset,
            duplicate=value.get("duplicate") is True,
            extra={k: v for k, v in value.items() if k not in known},
        )
