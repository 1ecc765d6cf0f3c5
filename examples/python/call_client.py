#!/usr/bin/env python3
"""Call a user's (or device's) connection through Chouquette, and send a
message to one user: the backend's side of docs/rpc.md "Calls to clients".

This is the code of the docs; a gateway test runs it. Standard library
only. The gateway's internal listener (default 127.0.0.1:8081) takes the
app's API key:

    POST /api/v1/calls       {"app_id", "user", "method", "args", "kwargs", "timeout": "5s"}
    POST /api/v1/users/send  {"app_id", "user", "event_kind", "data"}

A call goes to every WebSocket connection of the user, on every gateway;
the first client to answer wins. Its `result` comes back as
`200 {"result": ...}`, its `error` as `200 {"error": {"code", "message"}}`;
`404 not_connected` comes at once when the user has no connection,
`504 timeout` when none answered in time.

In a Django view:

    from call_client import Chouquette, NotConnected, CallTimeout, ClientError

    gateway = Chouquette(settings.CHOUQUETTE_API, settings.CHOUQUETTE_KEY, "bluelib")

    def battery(request, device_id):
        try:
            status = gateway.call(device_id, "device.status", timeout="3s")
        except NotConnected:
            return JsonResponse({"online": False})
        except (CallTimeout, ClientError) as e:
            return JsonResponse({"online": True, "problem": str(e)}, status=502)
        return JsonResponse({"online": True, "battery": status["battery"]})

From a shell (exit status 0 on a result, 2 on a client error, 3 when not
connected, 4 on a timeout, 1 otherwise):

    python3 examples/python/call_client.py --api http://127.0.0.1:8081 \\
        --key pub-key --app bluelib --user roger call device.status --args '[1]'
    python3 examples/python/call_client.py ... send chat.typing --data '{"room": "lobby"}'
"""

import argparse
import json
import sys
import urllib.error
import urllib.request


class GatewayError(Exception):
    """The gateway refused the request: `status`, `code`, `message`."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class NotConnected(GatewayError):
    """The user has no connection on any gateway."""


class CallTimeout(GatewayError):
    """The user's connections were reached; none answered in time."""


class ClientError(Exception):
    """The client answered the call with an `error`."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message = code, message


class Chouquette:
    """The internal API of a gateway, for one app."""

    def __init__(self, api, key, app_id):
        self.api, self.key, self.app_id = api.rstrip("/"), key, app_id

    def _post(self, path, body, wait):
        request = urllib.request.Request(
            self.api + path,
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            # A little longer than the call's own timeout: the gateway answers first.
            with urllib.request.urlopen(request, timeout=wait) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as e:
            try:
                refusal = json.load(e)
            except ValueError:
                refusal = {}
            code = refusal.get("code", "http_error")
            message = refusal.get("message", "")
            kind = {"not_connected": NotConnected, "timeout": CallTimeout}.get(code, GatewayError)
            raise kind(e.code, code, message) from None

    def call(self, user, method, args=(), kwargs=None, timeout="5s"):
        """Calls `method` on `user`'s connections; returns the first
        client's result, or raises ClientError, NotConnected, CallTimeout
        (or GatewayError for anything else)."""
        body = {
            "app_id": self.app_id,
            "user": user,
            "method": method,
            "args": list(args),
            "kwargs": kwargs or {},
            "timeout": timeout,
        }
        answer = self._post("/api/v1/calls", body, wait=_seconds(timeout) + 5)
        if "error" in answer:
            raise ClientError(answer["error"]["code"], answer["error"].get("message", ""))
        return answer["result"]

    def send(self, user, event_kind, data=None):
        """Writes a `message` to every connection of `user` now: best
        effort, not stored (a user who is offline never gets it). Returns
        the gateway's answer, {"connections": ..., "nodes": ...}."""
        body = {"app_id": self.app_id, "user": user, "event_kind": event_kind, "data": data}
        return self._post("/api/v1/users/send", body, wait=10)


def _seconds(duration):
    """Seconds in a "5s", "1500ms" or "1m" duration (for the HTTP wait)."""
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60)):
        if duration.endswith(suffix):
            try:
                return float(duration[: -len(suffix)]) * scale
            except ValueError:
                break
    return 60


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8081")
    parser.add_argument("--key", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--user", required=True)
    sub = parser.add_subparsers(dest="action", required=True)
    call = sub.add_parser("call")
    call.add_argument("method")
    call.add_argument("--args", default="[]")
    call.add_argument("--kwargs", default="{}")
    call.add_argument("--timeout", default="5s")
    send = sub.add_parser("send")
    send.add_argument("event_kind")
    send.add_argument("--data", default="null")
    options = parser.parse_args()
    gateway = Chouquette(options.api, options.key, options.app)
    try:
        if options.action == "send":
            answer = gateway.send(options.user, options.event_kind, json.loads(options.data))
            print(json.dumps(answer))
            return 0
        result = gateway.call(
            options.user,
            options.method,
            json.loads(options.args),
            json.loads(options.kwargs),
            options.timeout,
        )
        print(json.dumps({"result": result}))
        return 0
    except ClientError as e:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}))
        return 2
    except NotConnected:
        print(json.dumps({"not_connected": options.user}))
        return 3
    except CallTimeout:
        print(json.dumps({"timeout": options.timeout}))
        return 4
    except GatewayError as e:
        print(json.dumps({"refused": {"status": e.status, "code": e.code}}), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
