"""Commands to a device, on a real gateway with a real WebSocket device."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chouquette import (
    AsyncDevices,
    CallTimeoutError,
    ClientCallError,
    DeviceOfflineError,
    Devices,
    TokenSigner,
)

from conftest import API_KEY, APP, Client, Gateway
from test_users import connected, in_thread


def device_name() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


def test_a_command_is_answered_by_the_device(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    device = device_name()
    connected(client, signer, device)
    with Devices(gateway.internal, API_KEY, APP) as devices:
        pending = in_thread(lambda: devices.command(device, "device.status", 1, timeout=5))
        call = client.until("call")
        assert (call["method"], call["args"]) == ("device.status", [1])
        client.send({"class": "result", "id": call["id"], "result": {"battery": 87}})
        pending["thread"].join(10)
        assert pending.get("value") == {"battery": 87}, pending

        refused = in_thread(lambda: devices.command(device, "device.reboot", timeout=5))
        call = client.until("call")
        client.send({"class": "error", "id": call["id"], "code": "busy", "message": "charging"})
        refused["thread"].join(10)
        error = refused.get("error")
        assert isinstance(error, ClientCallError) and error.code == "busy", refused

        with pytest.raises(CallTimeoutError):
            devices.command(device, "device.ignored", timeout=0.3)


def test_a_device_not_connected_is_offline_at_once(gateway: Gateway) -> None:
    async def run() -> None:
        async with AsyncDevices(gateway.internal, API_KEY, APP) as devices:
            with pytest.raises(DeviceOfflineError) as raised:
                await devices.command(device_name(), "device.status", timeout=30)
            assert raised.value.status == 404
            assert raised.value.last_seen is None

    asyncio.run(run())
