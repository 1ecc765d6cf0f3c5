"""Chouquette for Python backends: sign what clients carry, publish,
verify the gateway's calls, drive the admin API.

    from chouquette import TokenSigner, Publisher, Event

The Redis inbox (`chouquette.inbox`, the `redis` extra) and the Django
helpers (`chouquette.django`) are imported from their modules, so that
neither Redis nor Django is needed by the rest.
"""

from ._http import Retry
from .admin import (
    Admin,
    AsyncAdmin,
    AsyncUserSubscriptions,
    Connection,
    Disconnected,
    SwitchResult,
    UserSubscriptions,
)
from .errors import (
    BadMessageError,
    CallTimeoutError,
    ChouquetteError,
    DeviceOfflineError,
    ClientCallError,
    NotConnectedError,
    TooLargeError,
    NotAllowedError,
    RateLimitedError,
    SignatureError,
    TooManySubscriptionsError,
    UnavailableError,
    UnknownAppError,
)
from .events import Event, Position, keywords, new_id
from .publisher import AsyncPublisher, Publisher
from .signature import Call, Caller, sign, verify_call, verify_signature
from .tokens import Filters, TokenSigner
from .users import AsyncUsers, Users, counter, gset, register
from .devices import AsyncDevices, Devices

__version__ = "0.1.0"

__all__ = [
    "AsyncDevices",
    "Devices",
    "DeviceOfflineError",
    "AsyncUsers",
    "CallTimeoutError",
    "ClientCallError",
    "NotConnectedError",
    "TooLargeError",
    "Users",
    "counter",
    "gset",
    "register",
    "Admin",
    "AsyncAdmin",
    "AsyncPublisher",
    "AsyncUserSubscriptions",
    "BadMessageError",
    "Call",
    "Caller",
    "ChouquetteError",
    "Connection",
    "Disconnected",
    "Event",
    "Filters",
    "NotAllowedError",
    "Position",
    "Publisher",
    "RateLimitedError",
    "Retry",
    "SignatureError",
    "SwitchResult",
    "TokenSigner",
    "TooManySubscriptionsError",
    "UnavailableError",
    "UnknownAppError",
    "UserSubscriptions",
    "keywords",
    "new_id",
    "sign",
    "verify_call",
    "verify_signature",
]
