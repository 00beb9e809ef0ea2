"""A first test: Alice answers a call from the bot, then hangs up."""
from switchboard_testkit import devsetup


def test_alice_answers(switchboard, bot_receiver):
    answer = switchboard.graph("POST", "/communications/calls", {
        "callbackUri": bot_receiver.url,
        "targets": [{"identity": {"user": {"id": devsetup.ALICE}}}],
        "requestedModalities": ["audio"],
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}})
    assert answer.status == 201
    call_id = answer.body["id"]

    switchboard.advance(1)  # Alice answers after 1 s of the call clock
    assert bot_receiver.states(call_id) == ["establishing", "established"]

    switchboard.hang_up(devsetup.ALICE)
    ended = bot_receiver.wait_for(call_id, state="terminated")
    assert ended.result_info["subcode"] == 4521
