"""Test kit for bots tested against Switchboard: a pytest plugin, a server handle and a
notification receiver that checks tokens as a real bot must."""
from . import devsetup
from ._http import GraphResponse
from .prompts import silent_wav
from .receiver import (InvalidNotification, InvalidNotificationToken, Notification,
                       NotificationTimeout, NotificationTokenValidator, Receiver,
                       ReceiverProblems)
from .server import Switchboard, SwitchboardError

__all__ = [
    "GraphResponse",
    "InvalidNotification",
    "InvalidNotificationToken",
    "Notification",
    "NotificationTimeout",
    "NotificationTokenValidator",
    "Receiver",
    "ReceiverProblems",
    "Switchboard",
    "SwitchboardError",
    "devsetup",
    "silent_wav",
]
