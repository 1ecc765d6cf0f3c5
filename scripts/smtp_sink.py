#!/usr/bin/env python3
"""A real SMTP server for the gateway's tests (aiosmtpd): every message
accepted is written to DIR as one JSON file (from, to, subject, body
decoded, with "\n" line ends, whether the session was authenticated and encrypted), so a test
reads what arrived. Optional STARTTLS (required when given) and AUTH
(PLAIN/LOGIN, required when given).

    python3 scripts/smtp_sink.py --port 2525 --dir /tmp/mails \
        [--tls-cert c.pem --tls-key k.pem] [--auth user:password] [--delay 1.5]
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import ssl
import threading
import uuid
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, folder, delay):
        self.folder = folder
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        # A slow relay: the test sees what two senders at once would do.
        await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            # Lines end in CRLF on the wire (RFC 5322): read back as "\n".
            "body": body.get_content().replace("\r\n", "\n") if body is not None else "",
            "authenticated": bool(session.authenticated),
            "tls": session.ssl is not None,
        }
        name = uuid.uuid4().hex
        tmp = os.path.join(self.folder, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(tmp, os.path.join(self.folder, f"{name}.json"))
        return "250 Message accepted for delivery"


def authenticator(expected_login, expected_password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == expected_login
            and auth_data.password.decode() == expected_password
        )
        return AuthResult(success=ok, handled=False)

    return check


def main():
    # aiosmtpd 1.4 warns about its own use of a deprecated attribute.
    warnings.filterwarnings("ignore", message="Session.login_data")
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--auth", help="user:password, then AUTH is required")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer to DATA")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    options = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        options.update(tls_context=context, require_starttls=True)
    if args.auth:
        login, password = args.auth.split(":", 1)
        options.update(
            authenticator=authenticator(login, password),
            auth_required=True,
            auth_require_tls=bool(args.tls_cert),
        )
    controller = Controller(Sink(args.dir, args.delay), hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
