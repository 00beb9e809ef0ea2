"""The Switchboard handle: starting, attaching, Graph requests and every control helper."""
import os
import stat
import urllib.request
from datetime import timedelta

import pytest

from switchboard_testkit import Switchboard, SwitchboardError, devsetup, is_injected

MEDIA = {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}


def create_call(switchboard, callback_url, user_id=devsetup.ALICE):
    return switchboard.graph("POST", "/communications/calls", {
        "callbackUri": callback_url,
        "targets": [{"identity": {"user": {"id": user_id}}}],
        "requestedModalities": ["audio"], "mediaConfig": MEDIA})


def place_call(switchboard, callback_url, user_id=devsetup.ALICE):
    answer = create_call(switchboard, callback_url, user_id)
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


def test_set_faults_throttles_a_create_with_retry_after_and_the_fault_header(
        switchboard, bot_receiver):
    rules = switchboard.set_faults(seed=7, api=[
        {"route": "calls", "fault": "throttle", "times": 1, "retry_after_secs": 2}])
    assert rules == {"seed": 7, "notifications": [], "api": [{
        "app_id": None, "route": "calls", "fault": "throttle", "probability": 1,
        "times": 1, "retry_after_secs": 2, "latency_ms": None}]}
    assert switchboard.faults() == rules
    throttled = create_call(switchboard, bot_receiver.url)
    assert throttled.status == 429
    assert throttled.headers["retry-after"] == "2"
    assert throttled.headers["switchboard-fault"] == "throttle"
    assert throttled.body["error"]["code"] == "TooManyRequests"
    assert create_call(switchboard, bot_receiver.url).status == 201  # only once: `times`
    assert len(switchboard.calls()) == 1


def test_the_same_seed_draws_the_same_faults(switchboard, bot_receiver):
    def statuses(seed):
        switchboard.set_faults(seed=seed, api=[
            {"route": "calls", "fault": "unavailable", "probability": 0.5}])
        return [create_call(switchboard, bot_receiver.url).status for _ in range(12)]

    first = statuses(7)
    assert set(first) == {201, 503}
    assert statuses(7) == first


def test_clear_faults_removes_the_rules_and_reset_brings_back_the_configured_ones(
        switchboard, bot_receiver):
    switchboard.set_faults(api=[{"fault": "unavailable"}],
                           notifications=[{"fault": "drop_after"}])
    assert create_call(switchboard, bot_receiver.url).status == 503
    switchboard.clear_faults()
    rules = switchboard.faults()
    assert (rules["api"], rules["notifications"]) == ([], [])
    place_call(switchboard, bot_receiver.url)
    switchboard.set_faults(api=[{"fault": "unavailable"}])
    switchboard.reset()  # the development setup configures no faults
    assert switchboard.faults()["api"] == []


def test_set_faults_refuses_a_rule_that_is_not_one_and_keeps_the_rules(switchboard):
    kept = switchboard.set_faults(seed=3, api=[{"route": "calls", "fault": "throttle"}])
    with pytest.raises(SwitchboardError, match="probability must be from 0 to 1") as error:
        switchboard.set_faults(api=[{"fault": "throttle", "probability": 2}])
    assert error.value.status == 400
    assert switchboard.faults() == kept


def test_is_injected_tells_the_attempts_a_fault_failed(switchboard, bot_receiver):
    switchboard.set_faults(notifications=[{"fault": "fail_first", "attempts": 1}])
    call_id = place_call(switchboard, bot_receiver.url)
    switchboard.advance(0)  # the first attempt, failed by the fault
    switchboard.advance(1.3)  # the retry: 1 s (+/- 20 %)
    first = switchboard.deliveries(call_id)[0]
    assert first["status"] == "delivered"
    assert [is_injected(attempt) for attempt in first["attempts"]] == [True, False]
    assert first["attempts"][0]["error"].startswith("injected fault: fail_first")
