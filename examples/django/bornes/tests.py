"""The example against a real gateway: clients/python/tests/test_django_example.py
runs `manage.py test bornes` with CHOUQUETTE_URL, CHOUQUETTE_WS,
CHOUQUETTE_SECRETS and CHOUQUETTE_API_KEY naming the gateway it started.
(websockets, the test client, comes with the package's test extras.)"""

import json
import os
from contextlib import ExitStack
from io import StringIO

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import TestCase
from websockets.sync.client import connect

from .models import Borne


class SupervisionTest(TestCase):
    def setUp(self) -> None:
        stack = ExitStack()
        self.addCleanup(stack.close)
        self.ws = stack.enter_context(connect(os.environ["CHOUQUETTE_WS"], open_timeout=10))
        self.roger = User.objects.create_user("roger", password="pw")
        with self.captureOnCommitCallbacks(execute=True):
            b1 = Borne.objects.create(uid="B1", status="T's'all good")
            Borne.objects.create(uid="B2", status="T's'all good")
        b1.supervisors.add(self.roger)

    def recv(self, cls: str) -> dict:
        while True:
            message = json.loads(self.ws.recv(timeout=10))
            if message["class"] == cls:
                return message

    def subscribe(self) -> dict:
        self.client.force_login(self.roger)
        answer = self.client.get("/api/get_subscription", {"borne": "B1"})
        self.assertEqual(answer.status_code, 200)
        self.assertEqual(answer["Cache-Control"], "no-store")
        message = answer.json()
        self.assertEqual((message["class"], list(message["channels"])), ("subscribe", ["bornes"]))
        self.ws.send(json.dumps(message))
        return message

    def test_only_a_supervisor_gets_a_subscription(self) -> None:
        self.assertEqual(self.client.get("/api/get_subscription", {"borne": "B1"}).status_code, 403)
        self.client.force_login(self.roger)
        answer = self.client.get("/api/get_subscription", {"borne": ["B1", "B2"]})
        self.assertEqual(answer.status_code, 403)

    def test_a_saved_borne_reaches_its_subscribers(self) -> None:
        self.subscribe()
        # The channel keeps state: B1's last status comes first, as a snapshot.
        snapshot = self.recv("data")
        self.assertTrue(snapshot.get("snapshot"))
        self.recv("ack")
        b1 = Borne.objects.get(uid="B1")
        b1.status = "oh, oh..."
        with self.captureOnCommitCallbacks(execute=True):
            Borne.objects.get(uid="B2").save()  # not Roger's: never received
            b1.save()
        live = self.recv("data")
        self.assertEqual((live["event_kind"], live["data"]["status"]), ("status", "oh, oh..."))
        self.assertEqual(live["keywords"], ["borne:B1"])

    def test_the_command_publishes_test_alarms(self) -> None:
        self.subscribe()
        self.recv("ack")
        out = StringIO()
        call_command("publish_test_alarms", "--borne", "B2", "--borne", "B1", "--count", "2",
                     stdout=out)
        self.assertEqual(len(out.getvalue().splitlines()), 4)
        alarms = [self.recv("data") for _ in range(2)]
        self.assertEqual([a["data"]["status"] for a in alarms], ["test alarm 1", "test alarm 2"])
        self.assertEqual({a["keywords"][0] for a in alarms}, {"borne:B1"})
