#!/usr/bin/env python3
"""Update a lattice namespace from a backend (docs/lattices.md).

Standard library only. A Django view that marks a message unread would call
`update_lattices(...)` after saving it (from `transaction.on_commit`, so
that clients never see a value the database rolled back):

    from lattice_update import Gateway
    gateway = Gateway(settings.CHOUQUETTE_INTERNAL_URL, settings.CHOUQUETTE_API_KEY)
    gateway.update_lattices("bluelib", "unread",
        shared={"total": counter(7)},
        users={"roger": {"rooms": set_of("r1", "r2"),
                         "status": register("away")}})

Values merge, they are never overwritten: a counter keeps the maximum (send
the new total, not an increment), a set the union, a register the value
with the greatest `ts`. So a retry after a timeout is harmless, and two
workers racing each other converge.

From the command line (what the gateway's test runs):

    python3 examples/python/lattice_update.py --url http://127.0.0.1:9001 \\
        --key pub-key --app bluelib --namespace unread \\
        --shared '{"total": {"counter": 7}}' \\
        --user roger '{"rooms": {"set": ["r1"]}}'

prints the gateway's answer, e.g. {"changed": {"shared": 1, "users": 1}},
and exits 0; a refused update prints the error and exits 1.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def counter(n):
    """A counter value: the greater of two wins."""
    return {"counter": int(n)}


def set_of(*items):
    """A set value: the union of both."""
    return {"set": [str(i) for i in items]}


def register(value, ts=None):
    """A register value: the greater `ts` wins (now, by default)."""
    return {"register": {"value": value, "ts": time.time() if ts is None else ts}}


class GatewayError(Exception):
    """The gateway refused the update (nothing was merged)."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class Gateway:
    """The gateway's internal API, for one API key."""

    def __init__(self, url, api_key, timeout=5):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def update_lattices(self, app_id, namespace, shared=None, users=None):
        """Merges values; answers {"changed": {"shared": K, "users": U}}."""
        body = {"app_id": app_id, "namespace": namespace,
                "shared": shared or {}, "users": users or {}}
        request = urllib.request.Request(
            f"{self.url}/api/v1/lattices",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as e:
            try:
                error = json.load(e)
            except ValueError:
                error = {}
            raise GatewayError(e.code, error.get("code", "?"),
                               error.get("message", "")) from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the internal listener")
    parser.add_argument("--key", required=True, help="the app's API key")
    parser.add_argument("--app", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--shared", default="{}", help="JSON: key -> value")
    parser.add_argument("--user", nargs=2, action="append", default=[],
                        metavar=("USER", "JSON"), help="a user's values")
    args = parser.parse_args()
    users = {user: json.loads(values) for user, values in args.user}
    try:
        answer = Gateway(args.url, args.key).update_lattices(
            args.app, args.namespace, json.loads(args.shared), users)
    except GatewayError as e:
        print(e, file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
