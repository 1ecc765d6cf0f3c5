"""Addressing users from the backend, with the app's API key:

- `call(user, method, ...)`: `POST /api/v1/calls`, a call to every
  connection of the user; the first client's `result` is returned, its
  `error` raised as `ClientCallError` (docs/rpc.md "Calls to clients");
- `send(user, event_kind, data)`: `POST /api/v1/users/send`, a `message` to
  every connection of the user, best effort, not stored;
- `notify(users, kind, ...)`: `POST /api/v1/notify`, a notification kept
  pending until a client acknowledges it (docs/notifications.md);
- `update_lattices(namespace, shared=..., users=...)`: `POST
  /api/v1/lattices`, values merged into a namespace (docs/lattices.md);
  build them with `counter`, `gset` and `register`.

    users = Users("http://127.0.0.1:8081", api_key="...", app_id="bluelib")
    users.notify(["roger"], "comment", title="New comment", link="/posts/7")
    users.update_lattices("unread", users={"roger": {"inbox": counter(3)}})
    answer = users.call("roger", "ui.confirm", "reboot B1?", timeout=10)

Retries: `notify` always carries an idempotency `id` (generated when not
given) and lattice merges are idempotent, so both are retried like a
publish; `call` and `send` are sent once (a retry could make a client run a
call twice, or show a message twice).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import httpx

from ._http import DEFAULT_RETRY, NO_RETRY, AsyncApi, Call, Retry, SyncApi, Timeout
from .errors import ClientCallError
from .events import new_id

#: The HTTP timeout of a `Users`: above the longest call the gateway waits
#: for (60 s), so that the gateway's own `timeout` answer arrives.
DEFAULT_USERS_TIMEOUT = 65.0

LatticeValue = Dict[str, Any]


def counter(value: int) -> LatticeValue:
    """A counter: merges keep the greatest."""
    if value < 0:
        raise ValueError("a counter is not negative")
    return {"counter": value}


def gset(items: Sequence[str]) -> LatticeValue:
    """A grow-only set of strings: merges keep the union."""
    return {"set": [str(item) for item in items]}


def register(value: Any, ts: float) -> LatticeValue:
    """A last-writer-wins register: merges keep the value with the greatest
    `ts` (seconds; on a tie, the greater value as JSON text)."""
    return {"register": {"value": value, "ts": ts}}


def notification_json(
    app_id: str,
    users: Union[str, Sequence[str]],
    kind: str,
    title: str = "",
    body: str = "",
    link: Optional[str] = None,
    data: Any = None,
    id: Optional[str] = None,
) -> Dict[str, Any]:
    """The body of `POST /api/v1/notify`, which a Redis inbox entry's
    `notification` field holds too; `id` generated when not given, so that
    a retry stores it once."""
    request: Dict[str, Any] = {
        "app_id": app_id,
        "users": [users] if isinstance(users, str) else list(users),
        "kind": kind,
        "title": title,
        "body": body,
        "id": id or new_id(),
    }
    if link is not None:
        request["link"] = link
    if data is not None:
        request["data"] = data
    return request


def _call_answer(answer: Any) -> Any:
    if not isinstance(answer, dict):
        raise TypeError("an answer object")
    if "result" in answer:
        return answer["result"]
    error = answer["error"]
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    raise ClientCallError(
        message if isinstance(message, str) else "the client refused the call",
        status=200,
        code=code if isinstance(code, str) else "client_error",
        body=answer,
    )


def _connections(answer: Any) -> int:
    return int(answer["connections"])


def _notification_id(answer: Any) -> str:
    return str(answer["id"])


def _changed(answer: Any) -> Dict[str, int]:
    changed = answer["changed"]
    return {"shared": int(changed["shared"]), "users": int(changed["users"])}


def _millis(seconds: float) -> str:
    if seconds <= 0:
        raise ValueError("timeout must be above 0")
    return f"{int(seconds * 1000)}ms"


class _Calls:
    """The requests, shared by the sync and asyncio classes."""

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id

    def call(
        self,
        user: str,
        method: str,
        args: Sequence[Any],
        kwargs: Optional[Mapping[str, Any]],
        timeout: float,
    ) -> Call[Any]:
        body = {
            "app_id": self.app_id,
            "user": user,
            "method": method,
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "timeout": _millis(timeout),
        }
        return Call("POST", "/api/v1/calls", _call_answer, body=body)

    def send(self, user: str, event_kind: str, data: Any) -> Call[int]:
        body = {"app_id": self.app_id, "user": user, "event_kind": event_kind, "data": data}
        return Call("POST", "/api/v1/users/send", _connections, body=body)

    def notify(
        self,
        users: Union[str, Sequence[str]],
        kind: str,
        title: str,
        body: str,
        link: Optional[str],
        data: Any,
        id: Optional[str],
    ) -> Call[str]:
        request = notification_json(self.app_id, users, kind, title, body, link, data, id)
        return Call("POST", "/api/v1/notify", _notification_id, body=request)

    def lattices(
        self,
        namespace: str,
        shared: Optional[Mapping[str, LatticeValue]],
        users: Optional[Mapping[str, Mapping[str, LatticeValue]]],
    ) -> Call[Dict[str, int]]:
        body: Dict[str, Any] = {"app_id": self.app_id, "namespace": namespace}
        if shared:
            body["shared"] = dict(shared)
        if users:
            body["users"] = {user: dict(values) for user, values in users.items()}
        return Call("POST", "/api/v1/lattices", _changed, body=body)


class Users(SyncApi):
    """Calls, messages, notifications and lattices for an app's users (sync)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        app_id: str,
        *,
        timeout: Timeout = DEFAULT_USERS_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.Client] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._calls = _Calls(app_id)
        super().__init__(
            url, api_key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    def call(
        self,
        user: str,
        method: str,
        *args: Any,
        kwargs: Optional[Mapping[str, Any]] = None,
        timeout: float = 5.0,
    ) -> Any:
        """The first `result` of the user's connections; raises
        `NotConnectedError` at once when the user has none,
        `CallTimeoutError` when none answers within `timeout` seconds, and
        `ClientCallError` with the client's code when it refuses."""
        request = self._calls.call(user, method, args, kwargs, timeout)
        return self._http.run(request, NO_RETRY)

    def send(self, user: str, event_kind: str, data: Any = None) -> int:
        """Sends a `message`; returns the user's connections on the node
        that answered (others are reached too)."""
        return self._http.run(self._calls.send(user, event_kind, data), NO_RETRY)

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
    ) -> str:
        """Notifies `users`; returns the notification's id (the same for a
        repeated `id`)."""
        return self._http.run(self._calls.notify(users, kind, title, body, link, data, id))

    def update_lattices(
        self,
        namespace: str,
        *,
        shared: Optional[Mapping[str, LatticeValue]] = None,
        users: Optional[Mapping[str, Mapping[str, LatticeValue]]] = None,
    ) -> Dict[str, int]:
        """Merges values into `namespace`; returns how many shared keys and
        users changed."""
        return self._http.run(self._calls.lattices(namespace, shared, users))


class AsyncUsers(AsyncApi):
    """`Users` for asyncio."""

    def __init__(
        self,
        url: str,
        api_key: str,
        app_id: str,
        *,
        timeout: Timeout = DEFAULT_USERS_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.AsyncClient] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._calls = _Calls(app_id)
        super().__init__(
            url, api_key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    async def call(
        self,
        user: str,
        method: str,
        *args: Any,
        kwargs: Optional[Mapping[str, Any]] = None,
        timeout: float = 5.0,
    ) -> Any:
        request = self._calls.call(user, method, args, kwargs, timeout)
        return await self._http.run(request, NO_RETRY)

    async def send(self, user: str, event_kind: str, data: Any = None) -> int:
        return await self._http.run(self._calls.send(user, event_kind, data), NO_RETRY)

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
    ) -> str:
        return await self._http.run(self._calls.notify(users, kind, title, body, link, data, id))

    async def update_lattices(
        self,
        namespace: str,
        *,
        shared: Optional[Mapping[str, LatticeValue]] = None,
        users: Optional[Mapping[str, Mapping[str, LatticeValue]]] = None,
    ) -> Dict[str, int]:
        return await self._http.run(self._calls.lattices(namespace, shared, users))


__all__: List[str] = [
    "AsyncUsers",
    "DEFAULT_USERS_TIMEOUT",
    "Users",
    "counter",
    "gset",
    "register",
]
