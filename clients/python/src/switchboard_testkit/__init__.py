"""Test kit for bots tested against Switchboard: a pytest plugin, a server handle, a
notification receiver that checks tokens as a real bot must, and the shapes of fault rules."""
from . import devsetup
from ._http import GraphResponse
from .faults import (ApiFault, ApiFaultKind, FaultRules, NotificationFault,
                     NotificationFaultKind, is_injected)
from .prompts import silent_wav
from .receiver import (InvalidNotification, InvalidNotificationToken, Notification,
                       NotificationTimeout, NotificationTokenValidator, Receiver,
                       ReceiverProblems)
from .server import Switchboard, SwitchboardError

__all__ = [
    "ApiFault",
    "ApiFaultKind",
    "FaultRules",
    "GraphResponse",
    "InvalidNotification",
    "InvalidNotificationToken",
    "Notification",
    "NotificationFault",
    "NotificationFaultKind",
    "NotificationTimeout",
    "NotificationTokenValidator",
    "Receiver",
    "ReceiverProblems",
    "Switchboard",
    "SwitchboardError",
    "devsetup",
    "is_injected",
    "silent_wav",
]
