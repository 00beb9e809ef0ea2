"""The Switchboard handle: starting, attaching, Graph requests and every control helper."""
import os
import stat
import urllib.request
from datetime import timedelta

import pytest

from switchboard_testkit import Switchboard, SwitchboardError, devsetup

MEDIA = {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}


def place_call(switchboard, callback_url, user_id=devsetup.ALICE):
    answer = switchboard.graph("POST", "/communications/calls", {
        "callbackUri": callback_url,
        "targets": [{"identity": {"user": {"id": user_id}}}],
        "requestedModalities": ["audio"], "mediaConfig": MEDIA})
    assert answer.status == 201, answer.body
    return answer.body["id"]


def test_start_serves_https_with_its_authority_and_stop_ends_it():
    with Switchboard.start() as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.https_url == server.url.replace("http://", "https://")
        with urllib.request.urlopen(server.https_url + "/healthz",
                                    context=server.ssl_context()) as answer:
            assert answer.status == 200
        with open(server.ca_bundle) as bundle, open(server.ca_file) as ca:
            assert bundle.read().endswith(ca.read())
        assert server.started
        process = server._process
    assert process.returncode == 0
    assert not os.path.exists(server.ca_file)


def test_start_reads_the_app_and_admin_token_of_a_config_file(tmp_path):
    config = tmp_path / "switchboard.toml"
    config.write_text('\n'.join([
        '[admin]', 'token = "kit-admin-token"',
        '[[apps]]', 'app_id = "c0ffee00-0000-4000-8000-000000000001"',
        'tenant_id = "c0ffee00-0000-4000-8000-0000000000e1"', 'client_secret = "kit-secret"',
        'roles = ["Calls.Initiate.All"]', '']))
    with Switchboard.start(config=str(config)) as server:
        assert (server.app_id, server.client_secret) == (
            "c0ffee00-0000-4000-8000-000000000001", "kit-secret")
        assert server.admin_token == "kit-admin-token"
        server.reset()  # the control API takes the admin token
        assert server.graph("GET", "/communications/calls/unknown").status == 404
        server.admin_token = None
        with pytest.raises(SwitchboardError) as error:
            server.reset()
        assert error.value.status == 401
        assert "admin token" in str(error.value)


def test_start_says_what_to_do_without_a_binary(tmp_path, monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SwitchboardError, match="SWITCHBOARD_BIN"):
        Switchboard.start()
    not_executable = tmp_path / "switchboard"
    not_executable.write_text("")
    not_executable.chmod(stat.S_IRUSR)
    with pytest.raises(SwitchboardError, match="not an executable"):
        Switchboard.start(bin=str(not_executable))


def test_start_shows_the_log_when_the_server_refuses_its_config(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[apps]]\napp_id = "x"\nbogus_key = 1\n')
    with pytest.raises(SwitchboardError, match="did not start"):
        Switchboard.start(config=str(config))


def test_from_env_reads_the_variables_of_switchboard_exec(switchboard):
    attached = Switchboard.from_env(switchboard.env())
    assert (attached.url, attached.https_url, attached.app_id, attached.ca_file) == (
        switchboard.url, switchboard.https_url, switchboard.app_id, switchboard.ca_file)
    assert attached.clock_now() == switchboard.clock_now()
    with pytest.raises(SwitchboardError, match="switchboard exec"):
        Switchboard.from_env({})


def test_token_is_an_app_token_reused_across_requests(switchboard):
    assert switchboard.token() == switchboard.token()
    answer = switchboard.graph("GET", "/communications/calls/5b0d0000-0000-4000-8000-000000000000")
    assert answer.status == 404
    assert answer.body["error"]["code"] == "8522"


def test_graph_takes_paths_with_or_without_the_version(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    for path in ("/communications/calls/" + call_id, "communications/calls/" + call_id,
                 "/beta/communications/calls/" + call_id):
        assert switchboard.graph("GET", path).body["id"] == call_id


def test_reset_ends_every_call(switchboard, bot_receiver):
    place_call(switchboard, bot_receiver.url)
    assert len(switchboard.calls()) == 1
    switchboard.reset()
    assert switchboard.calls() == []


def test_advance_moves_the_clock(switchboard):
    before = switchboard.clock_now()
    assert switchboard.advance(60) == before + timedelta(seconds=60)
    assert switchboard.clock_now() == before + timedelta(seconds=60)


def test_calls_lists_by_state(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    assert [c["id"] for c in switchboard.calls(state="establishing")] == [call_id]
    switchboard.advance(1)
    assert switchboard.calls(state="establishing") == []
    assert [c["id"] for c in switchboard.calls(state="established",
                                               app_id=switchboard.app_id)] == [call_id]


def test_hang_up_ends_the_party_calls(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(1)
    assert switchboard.hang_up(devsetup.ALICE) == [call_id]
    ended = bot_receiver.wait_for(call_id, state="terminated")
    assert ended.result_info["subcode"] == 4521


def test_press_outside_a_call_is_an_error_with_the_server_code(switchboard):
    with pytest.raises(SwitchboardError) as error:
        switchboard.press(devsetup.ALICE, "1")
    assert (error.value.status, error.value.code) == (409, "notInCall")


def test_dial_makes_an_incoming_call_that_times_out_unanswered(switchboard, bot_receiver):
    call_id = switchboard.dial(devsetup.BOB, callback_uri=bot_receiver.url)
    incoming = bot_receiver.wait_for(call_id, change_type="created")
    assert incoming.state == "incoming"
    switchboard.advance(15)
    ended = bot_receiver.wait_for(call_id, state="terminated")
    assert (ended.result_info["code"], ended.result_info["subcode"]) == (408, 1106)


def test_fail_call_ends_a_call_with_the_reason(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(1)
    result = switchboard.fail_call(call_id, 410, 301005)
    assert (result["code"], result["subcode"]) == (410, 301005)
    ended = bot_receiver.wait_for(call_id, state="terminated")
    assert ended.result_info["message"] == result["message"]


def test_redeliver_sends_a_notification_again(switchboard, bot_receiver):
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(0)
    [first] = switchboard.deliveries(call_id)
    assert (first["sequence"], first["status"]) == (1, "delivered")
    again = switchboard.redeliver(call_id, 1)
    assert again["attempt"]["status"] == 202
    assert [n.sequence for n in bot_receiver.notifications(call_id)] == [1, 1]


def test_meeting_and_party_show_their_state(switchboard):
    meeting = switchboard.meeting(devsetup.MEETING_ID)
    assert {p["id"] for p in meeting["participants"]} == {devsetup.ALICE, devsetup.BOB}
    assert switchboard.party(devsetup.ALICE)["displayName"] == "Alice"
    with pytest.raises(SwitchboardError) as error:
        switchboard.party("5b0d0000-0000-4000-8000-000000000000")
    assert error.value.status == 404
