"""Fault rules, as the control API's `/faults` route and the `[faults]` section write them
(docs/CONFIGURATION.md, "[faults]"), and what the deliveries log says of an injected fault."""
from __future__ import annotations

from typing import Any, List, Literal, Mapping, Optional, TypedDict

ApiFaultKind = Literal["throttle", "unavailable", "gateway_timeout", "latency", "commit_then_fail"]
"""What a Graph request gets: `429` with `Retry-After`, `503`, `504`, a late answer, or `503`
after the request took effect."""

NotificationFaultKind = Literal["fail_first", "drop_after", "delay"]
"""What a notification gets: its first attempts fail unsent, it is never sent (then dead), or
its first attempt waits."""

INJECTED_FAULT = "injected fault:"
"""How the `error` of a delivery attempt that a fault changed begins."""


class _ApiFaultKind(TypedDict):
    fault: ApiFaultKind


class ApiFault(_ApiFaultKind, total=False):
    """A rule for Graph requests (`[[faults.api]]`). Only `fault` is needed; a key left out (or
    None) takes the server's default."""

    app_id: Optional[str]
    """The app whose requests it applies to; every app if None."""
    route: Optional[str]
    """`calls` (create), `call` (get, delete), `operation`, `participants`, ... or an action's
    name (`answer`, `playPrompt`, ...), in any case; every route if None."""
    probability: float
    """The chance, 0 to 1, that a matching request gets it (default 1)."""
    times: Optional[int]
    """At most this many requests get it; no limit if None."""
    retry_after_secs: Optional[float]
    """`throttle`'s `Retry-After` (default 1)."""
    latency_ms: Optional[int]
    """`latency`'s delay (default 500, at most 60000)."""


class _NotificationFaultKind(TypedDict):
    fault: NotificationFaultKind


class NotificationFault(_NotificationFaultKind, total=False):
    """A rule for notifications (`[[faults.notifications]]`). Only `fault` is needed; a key left
    out (or None) takes the server's default. A notification draws once, at its first attempt."""

    app_id: Optional[str]
    """The app whose notifications it applies to; every app if None."""
    call_id: Optional[str]
    """The call whose notifications it applies to; every call if None."""
    probability: float
    """The chance, 0 to 1, that a matching notification gets it (default 1)."""
    attempts: Optional[int]
    """For `fail_first` and `drop_after` (default 1)."""
    delay_ms: Optional[int]
    """For `delay`, in real time (default 500, at most 60000)."""


class FaultRules(TypedDict):
    """The fault rules in force, with the seed their random choices are drawn from."""

    seed: int
    api: List[ApiFault]
    notifications: List[NotificationFault]


def is_injected(attempt: Mapping[str, Any]) -> bool:
    """Whether a delivery attempt (an entry of a notification's `attempts` in
    `Switchboard.deliveries()`) was changed by an injected fault."""
    return str(attempt.get("error") or "").startswith(INJECTED_FAULT)
