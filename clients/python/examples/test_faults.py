"""Fault recipes: a bot tested against the faults the real service shows, injected on purpose.

Each test sets its rules with `switchboard.set_faults(...)`; the fixture's reset before the next
test takes them away. The bot places calls and plays a greeting once a call is established. For
brevity its Graph client is the kit's `switchboard.graph`, and it waits for a notification with
the receiver's `wait_for`; a real bot uses its own.
"""
import threading
import time
import uuid
from typing import Optional, Set

import pytest

from switchboard_testkit import (Notification, NotificationTimeout, Receiver, Switchboard,
                                 devsetup, is_injected)

MEDIA = {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}


class CallingBot:
    """The bot under test."""

    def __init__(self, switchboard: Switchboard, receiver: Receiver):
        self.graph = switchboard.graph
        self.receiver = receiver
        self.greeting_url = receiver.prompt("greeting.wav", seconds=2)
        self.greeted: Set[str] = set()
        self.lock = threading.Lock()

    def place_call(self, user_id: str) -> str:
        """Places a call to a user; returns its id. A throttled create is tried again after
        Retry-After. Another failed create may have made the call all the same, so before it
        tries again the bot looks for a notification at the callback URL that create gave."""
        request = uuid.uuid4().hex
        for _ in range(3):
            answer = self.graph("POST", "/communications/calls", {
                "callbackUri": self.receiver.url + "?request=" + request,
                "targets": [{"identity": {"user": {"id": user_id}}}],
                "requestedModalities": ["audio"],
                "mediaConfig": MEDIA})
            if answer.status == 201:
                return str(answer.body["id"])
            made = None if answer.status == 429 else self.call_made_by(request)
            if made:
                return made
            time.sleep(float(answer.headers.get("retry-after", "1")))
        raise RuntimeError("no call placed: %d %s" % (answer.status, answer.body))

    def call_made_by(self, request: str) -> Optional[str]:
        """The call a create made, if a notification about it came to that create's URL."""
        try:
            made = self.receiver.wait_for(match=lambda n: n.path.endswith("request=" + request),
                                          timeout=1)
        except NotificationTimeout:
            return None
        return made.call_id

    def on_notification(self, n: Notification) -> None:
        if n.state == "established":
            self.greet(n.call_id)

    def refresh(self, call_id: str) -> None:
        """Reads the call, for when no notification came; a real bot runs this on a timer."""
        answer = self.graph("GET", f"/communications/calls/{call_id}")
        if answer.status == 200 and answer.body["state"] == "established":
            self.greet(call_id)

    def greet(self, call_id: str) -> None:
        """Plays the greeting, once per call, however the bot learnt the call was established."""
        with self.lock:
            if call_id in self.greeted:
                return
            self.greeted.add(call_id)
        answer = self.graph("POST", f"/communications/calls/{call_id}/playPrompt", {
            "clientContext": "greeting",
            "prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt",
                         "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo",
                                       "uri": self.greeting_url}}]})
        assert answer.status == 200, answer.body


@pytest.fixture
def bot(switchboard: Switchboard, bot_receiver: Receiver) -> CallingBot:
    bot = CallingBot(switchboard, bot_receiver)
    bot_receiver.on_notification = bot.on_notification
    return bot


def greetings(switchboard: Switchboard) -> int:
    """How many times Alice heard the greeting."""
    return [h["command"] for h in switchboard.party(devsetup.ALICE)["heard"]].count("play")


# --- throttling ---------------------------------------------------------------------------
def test_a_throttled_create_is_tried_again_after_retry_after(switchboard, bot):
    switchboard.set_faults(api=[{"route": "calls", "fault": "throttle", "times": 1,
                                 "retry_after_secs": 1}])
    started = time.monotonic()
    call_id = bot.place_call(devsetup.ALICE)

    assert time.monotonic() - started >= 1  # the bot waited as Retry-After said
    assert [c["id"] for c in switchboard.calls()] == [call_id]


# --- a create that took effect but answered 503 -------------------------------------------
def test_a_create_that_took_effect_is_not_made_twice(switchboard, bot):
    switchboard.set_faults(api=[{"route": "calls", "fault": "commit_then_fail", "times": 1}])
    call_id = bot.place_call(devsetup.ALICE)

    calls = switchboard.calls()  # a bot that blindly tried again would have two
    assert [c["id"] for c in calls] == [call_id], "the bot made %d calls" % len(calls)


# --- notifications that fail first --------------------------------------------------------
def test_notifications_that_fail_first_reach_the_bot_later(switchboard, bot_receiver, bot):
    switchboard.set_faults(notifications=[{"fault": "fail_first", "attempts": 1}])
    call_id = bot.place_call(devsetup.ALICE)
    switchboard.advance(0)  # the first notification's first attempt fails, unsent
    assert bot_receiver.states(call_id) == []

    switchboard.advance(1.5)  # its retry (1 s, +/- 20 %); Alice answers: that one fails first
    switchboard.advance(1.5)  # and is retried in turn: the bot greets Alice
    assert bot_receiver.states(call_id) == ["establishing", "established"]
    assert greetings(switchboard) == 1
    first = switchboard.deliveries(call_id)[0]
    assert [is_injected(attempt) for attempt in first["attempts"]] == [True, False]


# --- a dropped notification ---------------------------------------------------------------
def test_the_bot_reads_the_call_when_notifications_are_dropped(switchboard, bot_receiver, bot):
    switchboard.set_faults(notifications=[{"fault": "drop_after", "attempts": 1}])
    call_id = bot.place_call(devsetup.ALICE)
    switchboard.advance(1)  # Alice answers; the bot hears nothing of it

    assert bot_receiver.states(call_id) == []
    log = switchboard.deliveries(call_id)
    assert [n["status"] for n in log] == ["dead", "dead"]
    assert all(is_injected(n["attempts"][0]) for n in log)
    bot.refresh(call_id)  # no news for a while: the bot reads the call, and greets Alice
    assert greetings(switchboard) == 1


# --- a late notification ------------------------------------------------------------------
def test_a_late_notification_does_not_make_the_bot_act_twice(switchboard, bot_receiver, bot):
    call_id = bot.place_call(devsetup.ALICE)
    switchboard.advance(0)
    switchboard.set_faults(notifications=[{"call_id": call_id, "fault": "delay",
                                           "delay_ms": 1000}])
    switchboard.advance(1, settle=False)  # Alice answers; the bot is told 1 s (real time) later
    assert bot_receiver.states(call_id) == ["establishing"]

    bot.refresh(call_id)  # meanwhile the bot reads the call, finds it established, and greets
    switchboard.advance(0)  # waits for the late notification, and the bot's answer to it
    assert bot_receiver.states(call_id) == ["establishing", "established"]
    assert greetings(switchboard) == 1
    late = switchboard.deliveries(call_id)[1]
    assert is_injected(late["attempts"][0])
