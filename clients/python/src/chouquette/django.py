"""Django glue, without Django as a dependency: nothing here imports
Django when this module is imported; what needs it imports it when
called (so the package installs and type-checks without Django).

The seed's view (`GET /api/get_subscription?borne=B1`):

    signer = TokenSigner("bluelib", settings.CHOUQUETTE_SECRETS)

    @login_required
    def get_subscription_view(request):
        bornes = request.GET.getlist("borne")   # check the user may see them!
        return JsonResponse(get_subscription(request, signer, {
            "bornes": {"alarm": {"borne": bornes, "level": "critical"}}}))

A model whose changes are published:

    publish_model_changes(Borne, publisher, lambda borne, change: Event(
        "bornes", "status", {"borne": borne.uid}, data={"uid": borne.uid, "status": borne.status},
        key=f"borne:{borne.uid}", id=f"borne:{borne.uid}:{borne.version}"))
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from .events import EventLike
from .publisher import AsyncPublisher, Publisher
from .tokens import DEFAULT_TTL, Filters, TokenSigner

log = logging.getLogger("chouquette.django")

#: What a model change is: the argument `to_event` receives with the instance.
CREATED, UPDATED, DELETED = "created", "updated", "deleted"


def request_user(request: Any) -> Optional[str]:
    """The authenticated user's name (`request.user.get_username()`), or
    None for an anonymous request."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.get_username())


def get_subscription(
    request: Any,
    signer: TokenSigner,
    channels: Mapping[str, Filters],
    *,
    groups: Optional[Sequence[str]] = None,
    ttl: Optional[int] = DEFAULT_TTL,
    allow_anonymous: bool = False,
) -> Dict[str, Any]:
    """The subscribe message for the request's user: `channels` maps each
    channel to the filters this user may see (decide them from the
    user's rights, never from the request alone), signed with the user
    as `sub`. An anonymous request raises Django's `PermissionDenied`
    (a 403) unless `allow_anonymous`, when the tokens carry no `sub`."""
    user = request_user(request)
    if user is None and not allow_anonymous:
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("a subscription needs an authenticated user")
    return signer.subscribe_message(channels, user=user, groups=groups, ttl=ttl)


def subscription_view(
    signer: TokenSigner,
    channels_for: Callable[[Any], Mapping[str, Filters]],
    *,
    groups_for: Optional[Callable[[Any], Sequence[str]]] = None,
    ttl: Optional[int] = DEFAULT_TTL,
) -> Callable[[Any], Any]:
    """A ready view: `channels_for(request)` gives the channels and
    filters for that request's user (raise `PermissionDenied` or
    `Http404` there to refuse); the answer is the JSON subscribe message,
    never cached (`Cache-Control: no-store`: it holds a token)."""

    def view(request: Any) -> Any:
        from django.http import JsonResponse

        groups = groups_for(request) if groups_for is not None else None
        message = get_subscription(request, signer, channels_for(request), groups=groups, ttl=ttl)
        response = JsonResponse(message)
        response["Cache-Control"] = "no-store"
        return response

    return view


#: Turns a saved or deleted instance into its event (None: publish nothing).
ToEvent = Callable[[Any, str], Optional[EventLike]]


def publish_model_changes(
    model: Any,
    publisher: Union[Publisher, Callable[[EventLike], Any]],
    to_event: ToEvent,
    *,
    post_save: Any = None,
    post_delete: Any = None,
    on_commit: Optional[Callable[[Callable[[], None]], None]] = None,
    on_error: Optional[Callable[[Exception, Any], None]] = None,
    dispatch_uid: Optional[str] = None,
) -> Callable[[], None]:
    """Publishes an event for every save and delete of `model`.

    `to_event(instance, change)` builds it (`change`: "created",
    "updated" or "deleted"). Give each event an `id` that names the change
    (row and version) so a save published twice is delivered once.

    `post_save`/`post_delete` are the signals (default: Django's). The
    publish runs after the transaction commits (`on_commit`, default
    Django's `transaction.on_commit`): a client told of a change and
    fetching the row must see it. A publish that fails after the retries
    cannot fail the committed request: it goes to `on_error(error,
    instance)`, by default logged at ERROR with the event.

    `publisher` is a `Publisher` or any callable taking the event (a task
    queue's `delay`, an `InboxPublisher.publish`). Returns a function
    that disconnects both receivers.
    """
    if post_save is None or post_delete is None:
        from django.db.models import signals

        post_save = post_save if post_save is not None else signals.post_save
        post_delete = post_delete if post_delete is not None else signals.post_delete
    if on_commit is None:
        from django.db import transaction

        on_commit = transaction.on_commit
    if isinstance(publisher, AsyncPublisher):
        raise TypeError("signal receivers are synchronous: give a Publisher or a callable")
    send: Callable[[EventLike], Any] = (
        publisher.publish if isinstance(publisher, Publisher) else publisher
    )
    defer = on_commit

    def report(error: Exception, instance: Any) -> None:
        if on_error is not None:
            on_error(error, instance)
        else:
            log.error("publishing the change of %r failed: %s", instance, error)

    def changed(instance: Any, change: str) -> None:
        event = to_event(instance, change)
        if event is None:
            return

        def go() -> None:
            try:
                send(event)
            except Exception as error:  # noqa: BLE001 - reported, see docstring
                report(error, instance)

        defer(go)

    def saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
        if kwargs.get("raw"):
            return  # fixtures being loaded: not a change of the application
        changed(instance, CREATED if created else UPDATED)

    def deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
        changed(instance, DELETED)

    uid = dispatch_uid or f"chouquette:{getattr(model, '__name__', model)!s}:{id(to_event)}"
    post_save.connect(saved, sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=uid + ":delete")

    def disconnect() -> None:
        post_save.disconnect(sender=model, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=model, dispatch_uid=uid + ":delete")

    return disconnect
