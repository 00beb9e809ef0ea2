"""An IVR bot tested against Switchboard with the pytest plugin.

The bot answers incoming calls, plays a menu once a call is established, listens for keys, and
transfers the caller to Bob on key 1. It reacts to the notifications the `bot_receiver` fixture
gets (after checking their tokens) by calling the Graph API. For brevity its Graph client is the
kit's `switchboard.graph`; a real bot uses its own (see the msgraph-sdk example).
"""
from typing import Dict

import pytest

from switchboard_testkit import Notification, Receiver, Switchboard, devsetup

MEDIA = {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}


class IvrBot:
    """The bot under test."""

    def __init__(self, switchboard: Switchboard, callback_url: str, menu_url: str):
        self.graph = switchboard.graph
        self.callback_url = callback_url
        self.menu_url = menu_url
        self.menus: Dict[str, str] = {}  # call id -> the menu prompt's operation id

    def call(self, user_id: str) -> str:
        """Places a call to a user; returns its id."""
        answer = self.graph("POST", "/communications/calls", {
            "callbackUri": self.callback_url,
            "targets": [{"identity": {"user": {"id": user_id}}}],
            "requestedModalities": ["audio"],
            "mediaConfig": MEDIA})
        assert answer.status == 201, answer.body
        return answer.body["id"]

    def on_notification(self, n: Notification) -> None:
        if n.change_type == "created" and n.state == "incoming":
            self.answer(n.call_id)
        elif n.state == "established" and n.call_id not in self.menus:
            self.start_menu(n.call_id)
        elif n.tone == "tone1":
            self.transfer(n.call_id, devsetup.BOB)

    def answer(self, call_id: str) -> None:
        answer = self.graph("POST", f"/communications/calls/{call_id}/answer", {
            "callbackUri": self.callback_url,
            "acceptedModalities": ["audio"],
            "mediaConfig": MEDIA})
        assert answer.status == 202, answer.body

    def start_menu(self, call_id: str) -> None:
        tones = self.graph("POST", f"/communications/calls/{call_id}/subscribeToTone",
                           {"clientContext": "menu-keys"})
        assert tones.status == 200, tones.body
        prompt = self.graph("POST", f"/communications/calls/{call_id}/playPrompt", {
            "clientContext": "menu",
            "prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt",
                         "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo",
                                       "uri": self.menu_url}}]})
        assert prompt.status == 200, prompt.body
        self.menus[call_id] = prompt.body["id"]

    def transfer(self, call_id: str, user_id: str) -> None:
        answer = self.graph("POST", f"/communications/calls/{call_id}/transfer", {
            "transferTarget": {
                "@odata.type": "#microsoft.graph.invitationParticipantInfo",
                "endpointType": "default",
                "identity": {"user": {"id": user_id}}}})
        assert answer.status == 202, answer.body


@pytest.fixture
def bot(switchboard: Switchboard, bot_receiver: Receiver) -> IvrBot:
    menu_url = bot_receiver.prompt("menu.wav", seconds=3)  # a 3-second WAV file
    bot = IvrBot(switchboard, bot_receiver.url, menu_url)
    bot_receiver.on_notification = bot.on_notification
    return bot


def test_plays_the_menu_once_the_callee_answers(switchboard, bot_receiver, bot):
    call_id = bot.call(devsetup.ALICE)
    switchboard.advance(1)  # Alice answers after 1 s; the bot starts the menu
    assert bot_receiver.states(call_id) == ["establishing", "established"]

    switchboard.advance(3)  # the menu plays for 3 s
    done = bot_receiver.wait_for(call_id, operation=bot.menus[call_id])
    assert done.status == "completed"
    assert done.client_context == "menu"
    heard = switchboard.party(devsetup.ALICE)["heard"]
    assert [h["command"] for h in heard] == ["dial", "play"]


def test_hears_the_keys_the_caller_presses(switchboard, bot_receiver, bot):
    call_id = bot.call(devsetup.ALICE)
    switchboard.advance(1)

    switchboard.press(devsetup.ALICE, "2#")
    bot_receiver.wait_for(call_id, tone="pound")
    assert bot_receiver.tones(call_id) == "2#"


def test_key_1_transfers_the_caller_to_bob(switchboard, bot_receiver, bot):
    call_id = bot.call(devsetup.ALICE)
    switchboard.advance(1)

    switchboard.press(devsetup.ALICE, "1")
    bot_receiver.wait_for(call_id, state="transferring")
    switchboard.advance(3)  # Bob answers after 3 s: the bot's call ends, Alice and Bob talk
    ended = bot_receiver.wait_for(call_id, state="terminated")
    assert (ended.result_info["code"], ended.result_info["subcode"]) == (200, 7015)
    assert switchboard.party(devsetup.BOB)["calls"][-1]["state"] == "established"


def test_answers_an_incoming_call(switchboard, bot_receiver, bot):
    call_id = switchboard.dial(devsetup.BOB, callback_uri=bot_receiver.url)
    switchboard.advance(0)  # delivers the incoming call; the bot answers at once

    assert bot_receiver.states(call_id) == ["incoming", "establishing", "established"]
    assert call_id in bot.menus
    assert switchboard.calls(state="established")[0]["direction"] == "incoming"


def test_a_failed_callback_is_retried(switchboard, bot_receiver, bot):
    bot_receiver.fail_next(1, status=503)  # the bot is down for one notification
    call_id = bot.call(devsetup.ALICE)
    switchboard.advance(0)
    first = switchboard.deliveries(call_id)[0]
    assert first["status"] == "pending"
    assert [a["status"] for a in first["attempts"]] == [503]

    switchboard.advance(2)  # the retry falls due after 1 s (+/- 20 %)
    assert bot_receiver.states(call_id) == ["establishing", "established"]
    first = switchboard.deliveries(call_id)[0]
    assert [a["status"] for a in first["attempts"]] == [503, 202]
