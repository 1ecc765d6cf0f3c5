from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from chouquette.django import get_subscription

from .gateway import CHANNEL, signer


@require_GET
def get_subscription_view(request):
    """`GET /api/get_subscription?borne=B1[&borne=B2]`: the subscribe
    message the page forwards to the gateway, for bornes this user
    supervises (anything else: 403). The user sees their critical alarms
    and every status change."""
    if not request.user.is_authenticated:
        raise PermissionDenied("log in first")
    asked = request.GET.getlist("borne")
    allowed = set(request.user.bornes.filter(uid__in=asked).values_list("uid", flat=True))
    if not asked or set(asked) != allowed:
        raise PermissionDenied("not a borne of yours")
    filters = {"alarm": {"borne": sorted(allowed), "level": "critical"},
               "status": {"borne": sorted(allowed)}}
    response = JsonResponse(get_subscription(request, signer(), {CHANNEL: filters}))
    response["Cache-Control"] = "no-store"  # it holds a token
    return response
