"""The receiver: token checks as a real bot makes them, recording, waiting, failing on purpose."""
import json
import time
import urllib.error
import urllib.request
import wave
from io import BytesIO

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from switchboard_testkit import (NotificationTimeout, NotificationTokenValidator, Receiver,
                                 ReceiverProblems, Switchboard, devsetup)

MEDIA = {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}


def place_call(switchboard, callback_url):
    answer = switchboard.graph("POST", "/communications/calls", {
        "callbackUri": callback_url,
        "targets": [{"identity": {"user": {"id": devsetup.ALICE}}}],
        "requestedModalities": ["audio"], "mediaConfig": MEDIA})
    assert answer.status == 201, answer.body
    return answer.body["id"]


def post(url, token, body=b'{"value": []}'):
    """POSTs a notification body with this bearer token; returns the status answered."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers)) as a:
            return a.status
    except urllib.error.HTTPError as error:
        return error.code


def claims(**changes):
    now = int(time.time())
    base = {"iss": "https://api.botframework.com", "aud": devsetup.APP_ID,
            "iat": now, "nbf": now, "exp": now + 3600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def receiver(switchboard):
    """A receiver whose invalid notifications the test inspects itself."""
    with Receiver(switchboard) as receiver:
        yield receiver


@pytest.fixture
def own_key(receiver):
    """An RSA key the receiver trusts under kid `test-key`, as if the JWKS listed it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    receiver.validator.keys["test-key"] = jwt.PyJWK.from_json(
        jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return key


def test_notifications_signed_by_switchboard_are_valid(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(1)
    notes = bot_receiver.notifications(call_id)
    assert [(n.change_type, n.kind, n.state, n.sequence) for n in notes] == [
        ("updated", "call", "establishing", 1), ("updated", "call", "established", 2)]
    assert notes[0].call_id == call_id
    assert notes[0].headers["x-microsoft-tenant"] == switchboard.tenant_id
    assert bot_receiver.invalid == []
    validator = NotificationTokenValidator.for_switchboard(switchboard)
    claims = validator.validate(notes[0].headers["authorization"])
    assert (claims["iss"], claims["aud"]) == ("https://api.botframework.com", switchboard.app_id)


def test_a_token_signed_with_another_key_is_refused(switchboard, receiver):
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = next(iter(receiver.validator.keys))  # a kid the JWKS has, with the wrong key
    token = jwt.encode(claims(), forger, algorithm="RS256", headers={"kid": kid})
    assert post(receiver.url, token) == 401
    [invalid] = receiver.invalid
    assert "Signature verification failed" in invalid.reason
    assert receiver.notifications() == []
    with pytest.raises(ReceiverProblems, match="invalid token"):
        receiver.assert_clean()
    receiver.clear()
    receiver.assert_clean()


def test_a_token_with_an_unknown_key_id_is_refused(receiver, own_key):
    token = jwt.encode(claims(), own_key, algorithm="RS256", headers={"kid": "no-such-key"})
    assert post(receiver.url, token) == 401
    assert "no key with kid 'no-such-key'" in receiver.invalid[0].reason


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"exp": int(time.time()) - 600}, "ExpiredSignatureError"),
    ({"exp": None}, "MissingRequiredClaimError"),
    ({"aud": "another-app"}, "InvalidAudienceError"),
    ({"iss": "https://attacker.example"}, "InvalidIssuerError"),
    ({"nbf": int(time.time()) + 600}, "ImmatureSignatureError"),
])
def test_claims_are_checked(receiver, own_key, changes, reason):
    token = jwt.encode(claims(**changes), own_key, algorithm="RS256",
                       headers={"kid": "test-key"})
    assert post(receiver.url, token) == (401 if reason else 202)
    assert [i.reason.split(":")[0] for i in receiver.invalid] == ([reason] if reason else [])


def test_tokens_not_rs256_or_missing_are_refused(receiver, own_key):
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "test-key"})
    hmac = jwt.encode(claims(), "a shared secret of thirty-two bytes", algorithm="HS256",
                      headers={"kid": "test-key"})
    assert [post(receiver.url, t) for t in (unsigned, hmac, None, "not-a-jwt")] == [401] * 4
    assert len(receiver.invalid) == 4
    assert "no bearer token" in receiver.invalid[2].reason


def test_the_audience_is_the_app_and_the_issuer_bot_framework(switchboard):
    for receiver in (Receiver(switchboard, app_id="c0ffee00-0000-4000-8000-000000000001"),
                     Receiver(switchboard, issuer="https://someone.else")):
        with receiver:
            place_call(switchboard, receiver.url)
            switchboard.advance(0)
            assert receiver.notifications() == []
            assert len(receiver.invalid) == 1


def test_fail_next_answers_failures_then_the_retry_arrives(switchboard, bot_receiver):
    bot_receiver.fail_next(2, status=500)
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(0)
    assert bot_receiver.notifications(call_id) == []
    switchboard.advance(1.3)  # first retry: 1 s (+/- 20 %); Alice answers too
    switchboard.advance(2.5)  # second retry: 2 s (+/- 20 %)
    assert bot_receiver.states(call_id) == ["establishing", "established"]
    attempts = switchboard.deliveries(call_id)[0]["attempts"]
    assert [a["status"] for a in attempts] == [500, 500, 202]


def test_wait_for_matches_operations_and_tones(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(1)
    tones = switchboard.graph("POST", f"/communications/calls/{call_id}/subscribeToTone", {})
    assert tones.status == 200
    prompt = switchboard.graph("POST", f"/communications/calls/{call_id}/playPrompt", {
        "clientContext": "hello",
        "prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt",
                     "mediaInfo": {"uri": bot_receiver.prompt("hello.wav", 2)}}]})
    switchboard.press(devsetup.ALICE, "9*#")
    assert bot_receiver.wait_for(call_id, tone="star").tone == "star"
    assert bot_receiver.wait_for(call_id, tone="pound").sequence is not None
    assert bot_receiver.tones(call_id) == "9*#"
    switchboard.advance(2)
    done = bot_receiver.wait_for(call_id, operation=prompt.body["id"].upper())
    assert (done.change_type, done.status, done.operation_id) == (
        "deleted", "completed", prompt.body["id"])
    assert done.state is None
    assert bot_receiver.wait_for(call_id, operation="hello") is done
    assert bot_receiver.wait_for(match=lambda n: n.kind == "operation") is done


def test_since_finds_a_state_the_call_comes_back_to(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(1)
    transfer = switchboard.graph("POST", f"/communications/calls/{call_id}/transfer", {
        "transferTarget": {"endpointType": "default",
                           "identity": {"user": {"id": devsetup.ERIN}}}})
    assert transfer.status == 202
    transferring = bot_receiver.wait_for(call_id, state="transferring")
    switchboard.advance(60)  # Erin never answers: the call goes back to established
    back = bot_receiver.wait_for(call_id, state="established", since=transferring.sequence)
    assert (back.result_info["code"], back.result_info["subcode"]) == (500, 7000)
    assert bot_receiver.states(call_id) == [
        "establishing", "established", "transferring", "established"]


def test_a_roster_notification_is_about_the_participants(switchboard, bot_receiver):
    joined = switchboard.graph("POST", "/communications/calls", {
        "callbackUri": bot_receiver.url, "mediaConfig": MEDIA,
        "meetingInfo": {"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo",
                        "joinMeetingId": devsetup.MEETING_ID,
                        "passcode": devsetup.MEETING_PASSCODE}})
    assert joined.status == 201, joined.body
    switchboard.advance(1)
    roster = bot_receiver.wait_for(joined.body["id"], match=lambda n: n.kind == "participants")
    assert (roster.state, roster.operation_id) == (None, None)
    assert len(roster.resource_data) == 3  # Alice, Bob and the bot
    bots = [p for p in switchboard.meeting(devsetup.MEETING_ID)["participants"]
            if p["kind"] == "bot"]
    assert [(b["id"], b["callId"]) for b in bots] == [(switchboard.app_id, joined.body["id"])]


def test_wait_for_says_what_it_saw_when_nothing_matches(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    started = time.monotonic()
    with pytest.raises(NotificationTimeout) as error:
        bot_receiver.wait_for(call_id, state="established", timeout=0.3)
    assert time.monotonic() - started < 2
    message = str(error.value)
    assert "state='established'" in message
    assert "state=establishing (sequence 1)" in message
    assert "switchboard.advance" in message


def test_a_failing_handler_is_answered_500_and_reported(switchboard, receiver):
    def handler(notification):
        raise ValueError("the bot broke")

    receiver.on_notification = handler
    call_id = place_call(switchboard, receiver.url)
    switchboard.advance(0)
    assert switchboard.deliveries(call_id)[0]["attempts"][0]["status"] == 500
    with pytest.raises(ReceiverProblems, match="the bot broke"):
        receiver.assert_clean()


def test_forward_to_passes_notifications_to_the_bot_server(switchboard, bot_receiver):
    bot_receiver.fail_next(1, status=429)  # the bot's own server answers first
    with Receiver(switchboard, forward_to=bot_receiver.url) as front:
        call_id = place_call(switchboard, front.url)
        switchboard.advance(0)
        assert front.states(call_id) == ["establishing"]
        assert bot_receiver.states(call_id) == []
        assert switchboard.deliveries(call_id)[0]["attempts"][0]["status"] == 429
        switchboard.advance(1.3)
        assert bot_receiver.states(call_id) == ["establishing", "established"]
        front.assert_clean()


def test_prompt_serves_a_wav_of_that_length(bot_receiver):
    url = bot_receiver.prompt("menu.wav", 2.5)
    with urllib.request.urlopen(url) as answer:
        data = answer.read()
    with wave.open(BytesIO(data)) as w:
        assert w.getnframes() / w.getframerate() == 2.5


def test_the_receiver_reads_keys_the_server_rotated_in(switchboard: Switchboard, receiver):
    receiver.validator.keys.clear()  # as if every key it knew had been rotated out
    call_id = place_call(switchboard, receiver.url)
    switchboard.advance(0)
    assert receiver.states(call_id) == ["establishing"]
    assert json.dumps(receiver.invalid) == "[]"
