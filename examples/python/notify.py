#!/usr/bin/env python3
"""Notify users from a backend (docs/notifications.md).

Standard library only. A Django view that saves a comment would call
`notify_users(...)` once the comment is committed (from
`transaction.on_commit`, so a notification never announces a comment the
database rolled back), with an idempotency id derived from the comment so
that a retry after a timeout notifies nobody twice:

    from notify import Gateway
    gateway = Gateway(settings.CHOUQUETTE_INTERNAL_URL, settings.CHOUQUETTE_API_KEY)

    def comment_saved(comment):
        transaction.on_commit(lambda: gateway.notify_users(
            "bluelib", [comment.post.author.username],
            kind="comment", title="New comment",
            body=f"{comment.author} commented on {comment.post.title}",
            link=f"/posts/{comment.post.pk}#c{comment.pk}",
            data={"post": comment.post.pk, "comment": comment.pk},
            idempotency_id=f"comment-{comment.pk}"))

The notification stays pending for each user until one of their clients
acknowledges it; users not connected get it when they next connect.

From the command line (what the gateway's test runs):

    python3 examples/python/notify.py --url http://127.0.0.1:9001 \\
        --key pub-key --app bluelib --kind comment --title "New comment" \\
        --link /posts/7 --data '{"post": 7}' --id comment-1234 roger vb

prints the gateway's answer, e.g. {"id": "n-81f2a0c4d5e6f708"}, and exits
0; a refused notification prints the error and exits 1.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request


class GatewayError(Exception):
    """The gateway refused the notification (nothing was stored)."""

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

    def notify_users(self, app_id, users, kind, title="", body="", link=None,
                     data=None, idempotency_id=None):
        """Notifies `users`; answers the notification's id. A 503 is worth
        retrying with the same `idempotency_id`."""
        payload = {"app_id": app_id, "users": list(users), "kind": kind,
                   "title": title, "body": body}
        if link is not None:
            payload["link"] = link
        if data is not None:
            payload["data"] = data
        if idempotency_id is not None:
            payload["id"] = idempotency_id
        request = urllib.request.Request(
            f"{self.url}/api/v1/notify",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.load(answer)["id"]
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
    parser.add_argument("--kind", required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--body", default="")
    parser.add_argument("--link")
    parser.add_argument("--data", help="JSON")
    parser.add_argument("--id", help="idempotency id")
    parser.add_argument("users", nargs="+")
    args = parser.parse_args()
    data = json.loads(args.data) if args.data is not None else None
    try:
        notification = Gateway(args.url, args.key).notify_users(
            args.app, args.users, args.kind, args.title, args.body, args.link,
            data, args.id)
    except GatewayError as e:
        print(e, file=sys.stderr)
        return 1
    print(json.dumps({"id": notification}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
