#!/usr/bin/env python3
"""An RPC backend for Chouquette: check who calls, answer the call.

This is the code of docs/rpc.md; a gateway test runs it. Standard library
only. The gateway POSTs each client `call` routed here by `[[apps.rpc]]`:

    {"method": "chat.send_message", "args": ["lobby", "hi"], "kwargs": {},
     "user": {"app_id": "bluelib", "user_id": "roger", "groups": ["staff"]}}

with the header

    X-Chouquette-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

keyed with the app's first secret, over "<t>." followed by the exact body.
Check it before trusting `user`: anyone who can reach this URL could
otherwise claim to be anyone.

    export CHOUQUETTE_SECRET=s3cret-current
    python3 examples/python/rpc_backend.py --port 9000

In a Django project, the view is `rpc_view` below with the two shims
replaced by Django's own (`request.body`, `request.headers`, `JsonResponse`)
and `@csrf_exempt` (the signature, not a cookie, authenticates the gateway).
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Refuse signatures older (or newer) than this: a captured request cannot
# be replayed after it. Keep the backend's clock in sync (NTP).
REPLAY_WINDOW_SECONDS = 300


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


# The methods this backend answers: each gets the verified caller first.
def send_message(user, room, text):
    return {"sent": True, "room": room, "text": text, "by": user["user_id"]}


def whoami(user):
    return user


METHODS = {"chat.send_message": send_message, "chat.whoami": whoami}


class JsonResponse:
    """Shim of django.http.JsonResponse."""

    def __init__(self, data, status=200):
        self.content = json.dumps(data).encode()
        self.status_code = status


def rpc_view(request):
    """POST /chouquette/rpc. A 2xx JSON answer becomes the client's
    `result`; a 4xx with {"code", "message"} its `error` with that code."""
    signature = request.headers.get("X-Chouquette-Signature", "")
    if not verify(os.environ["CHOUQUETTE_SECRET"], signature, request.body):
        return JsonResponse({"code": "bad_signature"}, status=401)
    call = json.loads(request.body)
    method = METHODS.get(call["method"])
    if method is None:
        message = "no method " + call["method"]
        return JsonResponse({"code": "unknown_method", "message": message}, status=404)
    try:
        answer = method(call["user"], *call["args"], **call["kwargs"])
    except TypeError:
        return JsonResponse({"code": "bad_arguments"}, status=400)
    return JsonResponse(answer)


class Request:
    """Shim of django.http.HttpRequest: the raw body and the headers."""

    def __init__(self, body, headers):
        self.body = body
        self.headers = headers


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        response = rpc_view(Request(self.rfile.read(length), self.headers))
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
