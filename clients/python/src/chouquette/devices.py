"""Commanding devices from the backend, with the app's API key:
`command(device, method, ...)` is `POST /api/v1/devices/commands`
(docs/devices.md "Commands"): the device's `result` is returned, its
`error` raised as `ClientCallError`; a device not connected raises
`DeviceOfflineError` at once (with `last_seen`), one that does not answer
in time `CallTimeoutError`. The gateway tries WebSocket, then MQTT.

    devices = Devices("http://127.0.0.1:8081", api_key="...", app_id="bluelib")
    status = devices.command("B1", "device.status", timeout=3)

Commands are sent once, never retried: a retry could make a device act
twice.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

import httpx

from ._http import DEFAULT_RETRY, NO_RETRY, AsyncApi, Call, Retry, SyncApi, Timeout
from .users import DEFAULT_USERS_TIMEOUT, _call_answer, _millis


def _command(
    app_id: str,
    device: str,
    method: str,
    args: Sequence[Any],
    kwargs: Optional[Mapping[str, Any]],
    timeout: float,
) -> Call[Any]:
    body = {
        "app_id": app_id,
        "device": device,
        "method": method,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "timeout": _millis(timeout),
    }
    return Call("POST", "/api/v1/devices/commands", _call_answer, body=body)


class Devices(SyncApi):
    """Commands to an app's devices (sync)."""

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
        self._app_id = app_id
        super().__init__(
            url, api_key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    def command(
        self,
        device: str,
        method: str,
        *args: Any,
        kwargs: Optional[Mapping[str, Any]] = None,
        timeout: float = 5.0,
    ) -> Any:
        """The device's `result` (see the module docs for what is raised)."""
        request = _command(self._app_id, device, method, args, kwargs, timeout)
        return self._http.run(request, NO_RETRY)


class AsyncDevices(AsyncApi):
    """`Devices` for asyncio."""

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
        self._app_id = app_id
        super().__init__(
            url, api_key, timeout=timeout, retry=retry, client=client, headers=headers
        )

    async def command(
        self,
        device: str,
        method: str,
        *args: Any,
        kwargs: Optional[Mapping[str, Any]] = None,
        timeout: float = 5.0,
    ) -> Any:
        request = _command(self._app_id, device, method, args, kwargs, timeout)
        return await self._http.run(request, NO_RETRY)


__all__: List[str] = ["AsyncDevices", "Devices"]
