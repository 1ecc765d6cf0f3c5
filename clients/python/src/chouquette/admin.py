"""The operator API (docs/admin.md) and backend-driven subscriptions
(docs/protocol.md "Backend-driven subscriptions").

Two keys, two classes: `Admin` holds the `[admin] key` (status, kill
switches, disconnects, test publishes: every node of a Redis broker
hears switches and disconnects); `UserSubscriptions` holds an app's API
key, like a `Publisher`, and subscribes users from the backend:

    subs = UserSubscriptions("http://127.0.0.1:8081", api_key="...", app_id="bluelib")
    subs.subscribe_user("roger", "bornes", {"alarm": {"borne": "B1"}})

Each has an asyncio twin (`AsyncAdmin`, `AsyncUserSubscriptions`) with the
same methods, awaited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

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
from .tokens import Filters, check_filters

#: The scopes of a kill switch, narrowest last.
SCOPES = ("global", "app", "channel", "group", "user")


@dataclass(frozen=True)
class SwitchResult:
    """The answer to a switch change: `changed` is False when it was
    already so; `affected_connections` counts the asked node's."""

    switch: Dict[str, Any]
    enabled: bool
    changed: bool
    affected_connections: int


@dataclass(frozen=True)
class Disconnected:
    """Connections closed on the asked node, and how many nodes heard it."""

    disconnected: int
    nodes: int


@dataclass(frozen=True)
class Connection:
    """One connection of a user on the asked node (`GET /admin/connections`)."""

    id: int
    node: str
    transport: str
    since: str
    subscriptions: List[str] = field(default_factory=list)


def _object(answer: Any) -> Dict[str, Any]:
    if not isinstance(answer, dict):
        raise ValueError(f"not a JSON object: {answer!r}")
    return answer


def _switch_result(answer: Any) -> SwitchResult:
    a = _object(answer)
    return SwitchResult(
        switch=dict(a["switch"]),
        enabled=bool(a["enabled"]),
        changed=bool(a["changed"]),
        affected_connections=int(a.get("affected_connections", 0)),
    )


def _switches(answer: Any) -> List[Dict[str, Any]]:
    return [dict(s) for s in _object(answer)["switches"]]


def _disconnected(answer: Any) -> Disconnected:
    a = _object(answer)
    return Disconnected(disconnected=int(a["disconnected"]), nodes=int(a["nodes"]))


def _connections(answer: Any) -> List[Connection]:
    return [
        Connection(
            id=int(c["id"]),
            node=str(c["node"]),
            transport=str(c["transport"]),
            since=str(c["since"]),
            subscriptions=[str(s) for s in c.get("subscriptions", [])],
        )
        for c in _object(answer)["connections"]
    ]


def _count(answer: Any) -> int:
    return int(_object(answer)["connections"])


def switch_call(
    scope: str,
    enabled: bool,
    *,
    app: Optional[str] = None,
    channel: Optional[str] = None,
    group: Optional[str] = None,
    user: Optional[str] = None,
) -> Call[SwitchResult]:
    """`POST /admin/switches`: the gateway checks which fields a scope
    takes (400 `bad_message` otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"scope: one of {', '.join(SCOPES)}")
    body: Dict[str, Any] = {"scope": scope, "enabled": enabled}
    for name, value in (("app", app), ("channel", channel), ("group", group), ("user", user)):
        if value is not None:
            body[name] = value
    return Call("POST", "/admin/switches", _switch_result, body=body)


def disconnect_call(app: str, user: str, reason: Optional[str]) -> Call[Disconnected]:
    body = {"app": app, "user": user}
    if reason is not None:
        body["reason"] = reason
    return Call("POST", "/admin/disconnect", _disconnected, body=body)


def _position(answer: Any) -> Position:
    return Position.from_json(answer)


class _AdminCalls:
    """The admin requests, described once for both twins."""

    status = Call("GET", "/admin/status", _object)
    stats = Call("GET", "/admin/stats", _object)
    switches = Call("GET", "/admin/switches", _switches)

    @staticmethod
    def connections(app: str, user: str) -> Call[List[Connection]]:
        return Call("GET", "/admin/connections", _connections, params={"app": app, "user": user})

    @staticmethod
    def publish(event: EventLike) -> Call[Position]:
        return Call("POST", "/admin/publish", _position, body=event_json(event, None, with_id=True))


def _operator(operator: Optional[str]) -> Dict[str, str]:
    return {"X-Operator": operator} if operator is not None else {}


class Admin(SyncApi):
    """The admin API with the `[admin] key` (sync). `operator` is sent as
    `X-Operator` and recorded in the audit log (self-declared)."""

    def __init__(
        self,
        url: str,
        admin_key: str,
        *,
        operator: Optional[str] = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.Client] = None,
    ) -> None:
        super().__init__(
            url, admin_key, timeout=timeout, retry=retry, client=client,
            headers=_operator(operator),
        )

    def status(self) -> Dict[str, Any]:
        """`GET /admin/status`: version, node, broker, counts per app."""
        return self._http.run(_AdminCalls.status)

    def stats(self) -> Dict[str, Any]:
        """`GET /admin/stats`: every counter and histogram as JSON."""
        return self._http.run(_AdminCalls.stats)

    def switches(self) -> List[Dict[str, Any]]:
        """The kill switches in force."""
        return self._http.run(_AdminCalls.switches)

    def switch_off(
        self,
        scope: str,
        *,
        app: Optional[str] = None,
        channel: Optional[str] = None,
        group: Optional[str] = None,
        user: Optional[str] = None,
    ) -> SwitchResult:
        """Puts a kill switch in force: the subscriptions it covers get
        `reset` `disabled` and end; new ones are refused `disabled`."""
        call = switch_call(scope, False, app=app, channel=channel, group=group, user=user)
        return self._http.run(call)

    def switch_on(
        self,
        scope: str,
        *,
        app: Optional[str] = None,
        channel: Optional[str] = None,
        group: Optional[str] = None,
        user: Optional[str] = None,
    ) -> SwitchResult:
        """Lifts a kill switch."""
        call = switch_call(scope, True, app=app, channel=channel, group=group, user=user)
        return self._http.run(call)

    def disconnect(self, app: str, user: str, reason: Optional[str] = None) -> Disconnected:
        """Closes every connection of `user` of `app`, on every node."""
        return self._http.run(disconnect_call(app, user, reason))

    def connections(self, app: str, user: str) -> List[Connection]:
        """The connections of `user` of `app` on the asked node."""
        return self._http.run(_AdminCalls.connections(app, user))

    def publish(self, event: EventLike) -> Position:
        """A test publish with the admin key (`POST /admin/publish`);
        `event` must name its `app_id`."""
        return self._http.run(_AdminCalls.publish(event))


class AsyncAdmin(AsyncApi):
    """`Admin` for asyncio."""

    def __init__(
        self,
        url: str,
        admin_key: str,
        *,
        operator: Optional[str] = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: Retry = DEFAULT_RETRY,
        client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(
            url, admin_key, timeout=timeout, retry=retry, client=client,
            headers=_operator(operator),
        )

    async def status(self) -> Dict[str, Any]:
        return await self._http.run(_AdminCalls.status)

    async def stats(self) -> Dict[str, Any]:
        return await self._http.run(_AdminCalls.stats)

    async def switches(self) -> List[Dict[str, Any]]:
        return await self._http.run(_AdminCalls.switches)

    async def switch_off(
        self,
        scope: str,
        *,
        app: Optional[str] = None,
        channel: Optional[str] = None,
        group: Optional[str] = None,
        user: Optional[str] = None,
    ) -> SwitchResult:
        call = switch_call(scope, False, app=app, channel=channel, group=group, user=user)
        return await self._http.run(call)

    async def switch_on(
        self,
        scope: str,
        *,
        app: Optional[str] = None,
        channel: Optional[str] = None,
        group: Optional[str] = None,
        user: Optional[str] = None,
    ) -> SwitchResult:
        call = switch_call(scope, True, app=app, channel=channel, group=group, user=user)
        return await self._http.run(call)

    async def disconnect(self, app: str, user: str, reason: Optional[str] = None) -> Disconnected:
        return await self._http.run(disconnect_call(app, user, reason))

    async def connections(self, app: str, user: str) -> List[Connection]:
        return await self._http.run(_AdminCalls.connections(app, user))

    async def publish(self, event: EventLike) -> Position:
        return await self._http.run(_AdminCalls.publish(event))


SUBSCRIPTIONS = "/api/v1/subscriptions"


def subscribe_call(app_id: str, user: str, channel: str, filters: Filters) -> Call[int]:
    body = {"app_id": app_id, "user": user, "channel": channel, "filters": check_filters(filters)}
    return Call("POST", SUBSCRIPTIONS, _count, body=body)


def unsubscribe_call(app_id: str, user: str, channel: str) -> Call[int]:
    body = {"app_id": app_id, "user": user, "channel": channel}
    return Call("DELETE", SUBSCRIPTIONS, _count, body=body)


class UserSubscriptions(SyncApi):
    """Backend-driven subscriptions with the app's API key (sync).

    A grant subscribes every connection whose `connect` identity is that
    user, on every node, now and at the user's later connections, until
    revoked; sending it again is harmless (so it is retried like a
    publish). Each method returns how many of the user's connections the
    answering node reached now (0 is not an error: the grant is stored).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        app_id: str,
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

    def subscribe_user(self, user: str, channel: str, filters: Filters) -> int:
        """Subscribes `user` to `channel` with `filters` (in clear)."""
        return self._http.run(subscribe_call(self.app_id, user, channel, filters))

    def unsubscribe_user(self, user: str, channel: str) -> int:
        """Ends the backend subscription of `user` to `channel`."""
        return self._http.run(unsubscribe_call(self.app_id, user, channel))


class AsyncUserSubscriptions(AsyncApi):
    """`UserSubscriptions` for asyncio."""

    def __init__(
        self,
        url: str,
        api_key: str,
        app_id: str,
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

    async def subscribe_user(self, user: str, channel: str, filters: Filters) -> int:
        return await self._http.run(subscribe_call(self.app_id, user, channel, filters))

    async def unsubscribe_user(self, user: str, channel: str) -> int:
        return await self._http.run(unsubscribe_call(self.app_id, user, channel))
