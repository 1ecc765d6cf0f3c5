#!/usr/bin/env python3
"""A connect auth backend for Chouquette: who is this connection?

This is the code of docs/connect-auth.md; a gateway test runs it. Standard
library only. At each upgrade of /ws, /sse or /poll for an app with
`[apps.connect_auth]`, the gateway POSTs here:

    {"app_id": "bluelib", "transport": "ws", "address": "203.0.113.7",
     "headers": {"cookie": "sessionid=...", "authorization": "..."}}

(`cookie` and `authorization` only when the browser sent them) with the
header

    X-Chouquette-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

keyed with the app's first secret, over "<t>." followed by the exact body.
Check it first: anyone who can reach this URL could otherwise ask who owns
a stolen cookie. Then find the session the cookie names, as the web pages
of the same site do, and answer

    200 {"user_id": "roger", "groups": ["staff"],
         "subscriptions": {"bornes": {"filters": {"alarm": {"borne": ["B1"]}}}}}

to accept the connection (filters in clear: the gateway trusts this
answer), 401 when nobody is logged in, 403 when the user may not connect.

    export CHOUQUETTE_SECRET=s3cret-current
    python3 examples/python/connect_auth_backend.py --port 9000

In a Django project, the view is `connect_auth_view` below with the shims
replaced by Django's own (`request.body`, `request.headers`, `JsonResponse`,
and `SessionStore(session_key).get("_auth_user_id")` with the user's model
in place of `SESSIONS`), and `@csrf_exempt` (the signature, not a cookie,
authenticates the gateway).
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Refuse signatures older (or newer) than this: a captured request cannot
# be replayed after it. Keep the backend's clock in sync (NTP).
REPLAY_WINDOW_SECONDS = 300

# Stand-in for Django's session store: session key -> user.
SESSIONS = {
    "demo-roger": {"id": "roger", "groups": ["staff"], "bornes": ["B1"], "active": True},
    "demo-gone": {"id": "vb", "groups": [], "bornes": [], "active": False},
}


def verify(secret, header, body, now=None):
    """Whether `header` (the X-Chouquette-Signature value) signs `body`
    (bytes, exactly as received) with `secret`, within the replay window."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > REPLAY_WINDOW_SECONDS:
        return False
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def session_key(cookie_header):
    """The `sessionid` cookie's value, or None."""
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header or "")
    except CookieError:
        return None
    morsel = cookies.get("sessionid")
    return morsel.value if morsel else None


class JsonResponse:
    """Shim of django.http.JsonResponse."""

    def __init__(self, data, status=200):
        self.content = json.dumps(data).encode()
        self.status_code = status


def connect_auth_view(request):
    """POST /chouquette/auth: the connection's user and subscriptions."""
    signature = request.headers.get("X-Chouquette-Signature", "")
    if not verify(os.environ["CHOUQUETTE_SECRET"], signature, request.body):
        return JsonResponse({"code": "bad_signature"}, status=401)
    asked = json.loads(request.body)
    user = SESSIONS.get(session_key(asked["headers"].get("cookie")))
    if user is None:
        return JsonResponse({"code": "not_logged_in"}, status=401)
    if not user["active"]:
        return JsonResponse({"code": "inactive"}, status=403)
    return JsonResponse(
        {
            "user_id": user["id"],
            "groups": user["groups"],
            "subscriptions": {
                "bornes": {"filters": {"alarm": {"borne": user["bornes"]}}},
            },
        }
    )


class Request:
    """Shim of django.http.HttpRequest: the raw body and the headers."""

    def __init__(self, body, headers):
        self.body = body
        self.headers = headers


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        response = connect_auth_view(Request(self.rfile.read(length), self.headers))
        self.send_response(response.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening on", server.server_address, file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
