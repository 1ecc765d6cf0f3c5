#!/usr/bin/env python3
"""Publish events to Chouquette through its Redis inbox, with redis-py.

A backend that already talks to Redis (a Django or Celery app, say) can
publish without calling the gateway's HTTP API: it appends an entry to the
inbox stream (`[broker] inbox`, default `chq:inbox`), and one of the gateways
publishes it, exactly once, however many gateways run.

    pip install -r examples/python/requirements.txt
    python3 examples/python/publish_inbox.py --url redis://127.0.0.1:6379 \
        --app bluelib --channel bornes --event-kind alarm \
        --keyword borne:B1 --keyword level:critical --data '{"status": "oh, oh..."}'

An entry holds one event as JSON in its field `event`, or a batch as a JSON
array in `events` (published in order, with consecutive offsets when the
events share a channel). The JSON is what `POST /api/v1/publish` takes.
Entries the gateway refuses (unknown app, malformed event, full state) are
moved to `<inbox>:dead` with the reason; read them with `XRANGE`.
"""

import argparse
import json

import redis


def event(app, channel, kind, keywords=(), key=None, data=None, id=None):
    """One event, as the gateway's publish API takes it. With an `id`, the
    event is published once however many times it is sent (within the
    gateway's dedup window), over the inbox or over HTTP."""
    e = {"app_id": app, "channel": channel, "event_kind": kind,
         "keywords": list(keywords), "data": data}
    if key is not None:
        e["key"] = key
    if id is not None:
        e["id"] = id
    return e


def publish(client, events, inbox="chq:inbox"):
    """Appends one entry; returns its stream id (the gateway's dedup id)."""
    if len(events) == 1:
        fields = {"event": json.dumps(events[0])}
    else:
        fields = {"events": json.dumps(events)}
    return client.xadd(inbox, fields)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--inbox", default="chq:inbox")
    parser.add_argument("--app", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--event-kind", required=True)
    parser.add_argument("--keyword", action="append", default=[])
    parser.add_argument("--key")
    parser.add_argument("--id", help="idempotency id: a repeat is published once")
    parser.add_argument("--data", default="null", help="JSON payload")
    parser.add_argument("--count", type=int, default=1,
                        help="publish this many copies in one entry (a batch)")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    one = event(args.app, args.channel, args.event_kind, args.keyword,
                args.key, json.loads(args.data), args.id)
    entry_id = publish(client, [one] * args.count, args.inbox)
    print(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)


if __name__ == "__main__":
    main()
