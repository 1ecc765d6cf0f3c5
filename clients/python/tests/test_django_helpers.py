"""chouquette.django with a real Django (configured in this process, no
database): the subscription view's message is accepted by the gateway,
and model signals publish through it, after commit, errors reported."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, List, Tuple

import django
import jwt
import pytest

from chouquette import BadMessageError, Event, Publisher, TokenSigner

from conftest import API_KEY, APP, Client, Gateway, channel_name

# Django is a test requirement (scripts/test-python.sh installs it): its
# absence fails this module, it is never skipped.


@pytest.fixture(scope="module", autouse=True)
def django_settings() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


def test_importing_the_module_does_not_import_django() -> None:
    code = ("import sys, chouquette.django; "
            "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_subscription_view_signs_for_the_user(
    client: Client, signer: TokenSigner
) -> None:
    from django.contrib.auth.models import AnonymousUser, User
    from django.core.exceptions import PermissionDenied
    from django.test import RequestFactory

    from chouquette.django import subscription_view

    channel = channel_name()
    view = subscription_view(
        signer,
        lambda request: {channel: {"alarm": {"borne": request.GET.getlist("borne")}}},
        groups_for=lambda request: ["vb"],
    )
    request = RequestFactory().get("/api/get_subscription", {"borne": "B1"})
    request.user = AnonymousUser()
    with pytest.raises(PermissionDenied):
        view(request)
    request.user = User(username="roger")
    response = view(request)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    message = json.loads(response.content)
    token = message["channels"][channel]["filters"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["groups"]) == ("roger", ["vb"])
    assert claims["filters"] == {"alarm": {"borne": ["B1"]}}
    assert client.subscribe(message)["class"] == "ack"


def test_model_signals_publish_after_commit_and_report_failures(
    gateway: Gateway, client: Client, signer: TokenSigner
) -> None:
    from django.dispatch import Signal

    from chouquette.django import publish_model_changes

    channel = channel_name()
    assert client.subscribe(signer.subscribe_message({channel: {"*": {}}}))["class"] == "ack"
    post_save, post_delete = Signal(), Signal()
    committed: List[Any] = []  # callbacks waiting for the "commit"
    failures: List[Tuple[Exception, Any]] = []

    class Borne:
        def __init__(self, uid: str) -> None:
            self.uid = uid

    def to_event(borne: Borne, change: str) -> Event:
        name = channel if borne.uid != "bad" else "bad channel"
        return Event(name, change, {"borne": borne.uid}, data=borne.uid,
                     id=f"{borne.uid}:{change}")

    with Publisher(gateway.internal, API_KEY, APP) as pub:
        disconnect = publish_model_changes(
            Borne, pub, to_event, post_save=post_save, post_delete=post_delete,
            on_commit=committed.append, on_error=lambda e, i: failures.append((e, i)),
        )
        post_save.send(sender=Borne, instance=Borne("B1"), created=True)
        post_save.send(sender=Borne, instance=Borne("fixture"), created=True, raw=True)
        post_save.send(sender=Borne, instance=Borne("B1"), created=False)
        post_delete.send(sender=Borne, instance=Borne("B1"))
        bad = Borne("bad")
        post_save.send(sender=Borne, instance=bad, created=False)
        assert len(committed) == 4, "nothing goes out before the commit; raw saves never"
        for callback in committed:
            callback()
        disconnect()
        post_save.send(sender=Borne, instance=Borne("B9"), created=True)
    assert len(committed) == 4, "disconnected"
    received = [client.until("data") for _ in range(3)]
    assert [(m["event_kind"], m["data"]) for m in received] == [
        ("created", "B1"), ("updated", "B1"), ("deleted", "B1")]
    [(error, instance)] = failures
    assert isinstance(error, BadMessageError) and instance is bad
