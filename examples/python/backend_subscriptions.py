#!/usr/bin/env python3
"""Backend-driven subscriptions: the backend decides what a user follows.

This is the code of docs/protocol.md "Backend-driven subscriptions"; a
gateway test runs it. Standard library only. The gateway's internal
listener takes, with the app's API key:

    POST   /api/v1/subscriptions  {"app_id", "user", "channel", "filters"}
    DELETE /api/v1/subscriptions  {"app_id", "user", "channel"}

and subscribes (or unsubscribes) every connection of that user, on every
gateway, now and at the user's later connections, until revoked.

    export CHOUQUETTE_API_KEY=k-bluelib
    python3 examples/python/backend_subscriptions.py \\
        --gateway http://127.0.0.1:8081 --app bluelib \\
        subscribe roger bornes '{"alarm": {"borne": "B1"}}'
    python3 examples/python/backend_subscriptions.py ... unsubscribe roger bornes

In a Django project, call `subscribe_user` where the user's rights change
(a `post_save` of the membership model, a view that adds a user to a
team): the gateway needs no token from the browser for it.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


class GatewayError(Exception):
    """The gateway refused the request: `status` and its JSON `code`."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


def _send(gateway, api_key, method, body, timeout=5.0):
    request = urllib.request.Request(
        gateway.rstrip("/") + "/api/v1/subscriptions",
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as refused:
        try:
            detail = json.load(refused)
        except ValueError:
            detail = {}
        raise GatewayError(
            refused.code, detail.get("code", "unknown"), detail.get("message", "")
        ) from None


def subscribe_user(gateway, api_key, app_id, user, channel, filters):
    """Subscribes every connection of `user` to `channel` with `filters`
    (in clear, the shape of a subscription token's `filters` claim).
    Returns how many connections the answering gateway reached now."""
    body = {"app_id": app_id, "user": user, "channel": channel, "filters": filters}
    return _send(gateway, api_key, "POST", body)["connections"]


def unsubscribe_user(gateway, api_key, app_id, user, channel):
    """Ends the backend subscription of `user` to `channel`."""
    body = {"app_id": app_id, "user": user, "channel": channel}
    return _send(gateway, api_key, "DELETE", body)["connections"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8081")
    parser.add_argument("--app", required=True)
    parser.add_argument("action", choices=["subscribe", "unsubscribe"])
    parser.add_argument("user")
    parser.add_argument("channel")
    parser.add_argument("filters", nargs="?", default="{}")
    args = parser.parse_args()
    api_key = os.environ["CHOUQUETTE_API_KEY"]
    try:
        if args.action == "subscribe":
            filters = json.loads(args.filters)
            n = subscribe_user(args.gateway, api_key, args.app, args.user, args.channel, filters)
        else:
            n = unsubscribe_user(args.gateway, api_key, args.app, args.user, args.channel)
    except GatewayError as refused:
        print(refused, file=sys.stderr)
        return 1
    print(json.dumps({"connections": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
