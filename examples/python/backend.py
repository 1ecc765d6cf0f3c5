#!/usr/bin/env python3
"""A backend for Chouquette in a few lines: sign a subscription, publish.

This is the code of docs/backend-quickstart.md; a gateway test runs it.

    pip install -r examples/python/requirements.txt
    export CHOUQUETTE_SECRET=s3cret-current CHOUQUETTE_API_KEY=pub-key
    python3 examples/python/backend.py subscription --user roger --borne B1
    python3 examples/python/backend.py publish --borne B1 --level critical \
        --data '{"uid": "B1", "status": "oh, oh..."}'
    python3 examples/python/backend.py device-connect --device D1

The backend decides what each user may see and signs it; the browser only
carries the signed message to the gateway, which verifies it and never
trusts the client. Publishing is one authenticated POST on the gateway's
internal listener (never exposed to browsers).
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

import jwt  # PyJWT

APP = "bluelib"
CHANNEL = "bornes"


def subscription(user, bornes, secret, ttl=3600):
    """The subscribe message for `user`, allowed to see the status of
    `bornes` and their critical alarms. Required claims: `app_id`,
    `channel`, `filters` and `exp` (seconds since the epoch); `sub` names
    the user (per-user limits, kill switches, disconnects), `groups` its
    groups. The token is valid for `ttl` seconds: the client asks again
    (the same view) before it expires."""
    claims = {
        "app_id": APP,
        "channel": CHANNEL,
        "filters": {
            "status": {"borne": bornes},
            "alarm": {"borne": bornes, "level": "critical"},
        },
        "sub": user,
        "exp": int(time.time()) + ttl,
    }
    token = jwt.encode(claims, secret, algorithm="HS256")
    return {"class": "subscribe", "app_id": APP, "channels": {CHANNEL: {"filters": token}}}


def publish(url, api_key, events, timeout=5):
    """Publishes one event (a dict) or a batch (a list); returns the
    gateway's answer: `{"epoch", "offset"}` per event. Give each event an
    `id` and a retry after a timeout never publishes it twice."""
    request = urllib.request.Request(
        url + "/api/v1/publish",
        data=json.dumps(events).encode(),
        headers={"Authorization": "Bearer " + api_key, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        # Errors are JSON too: {"code": ..., "message": ...}.
        raise SystemExit(f"publish refused ({e.code}): {e.read().decode()}") from None


def device_connect(device, secret, ttl=3600):
    """The `connect` message for `device`, which may then publish on the
    `devices` channel, as itself only: the `publish` claim pins its events
    to the keyword `device:<device>` (an event must carry it, and no other
    `device:` keyword), so a device cannot speak for another."""
    claims = {
        "app_id": APP,
        "sub": device,
        "exp": int(time.time()) + ttl,
        "publish": {"devices": [f"device:{device}"]},
    }
    token = jwt.encode(claims, secret, algorithm="HS256")
    return {"class": "connect", "app_id": APP, "token": token}


def alarm(borne, level, data):
    """An alarm about `borne`: its keywords are what filters match on; its
    `key` keeps the last state per borne for clients that connect later."""
    return {
        "app_id": APP,
        "channel": CHANNEL,
        "event_kind": "alarm",
        "keywords": [f"borne:{borne}", f"level:{level}"],
        "key": f"borne:{borne}",
        "id": str(uuid.uuid4()),
        "data": data,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("subscription", help="print a signed subscribe message")
    sub.add_argument("--user", required=True)
    sub.add_argument("--borne", action="append", required=True)
    sub.add_argument("--ttl", type=int, default=3600)
    dev = commands.add_parser("device-connect", help="print a signed connect message for a device")
    dev.add_argument("--device", required=True)
    dev.add_argument("--ttl", type=int, default=3600)
    pub = commands.add_parser("publish", help="publish one alarm")
    pub.add_argument("--url", default="http://127.0.0.1:8081")
    pub.add_argument("--borne", required=True)
    pub.add_argument("--level", default="critical")
    pub.add_argument("--data", default="{}")
    args = parser.parse_args()

    if args.command == "subscription":
        secret = os.environ["CHOUQUETTE_SECRET"]
        print(json.dumps(subscription(args.user, args.borne, secret, args.ttl)))
    elif args.command == "device-connect":
        secret = os.environ["CHOUQUETTE_SECRET"]
        print(json.dumps(device_connect(args.device, secret, args.ttl)))
    else:
        answer = publish(args.url, os.environ["CHOUQUETTE_API_KEY"],
                         alarm(args.borne, args.level, json.loads(args.data)))
        print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
