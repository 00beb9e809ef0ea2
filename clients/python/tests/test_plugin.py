"""The pytest plugin, run on small test files by pytest's own pytester."""
import os

import pytest

from switchboard_testkit import Switchboard


def test_switchboard_is_reset_before_each_test(pytester, attached):
    pytester.makepyfile("""
        from switchboard_testkit import devsetup

        def test_places_a_call(switchboard, bot_receiver):
            answer = switchboard.graph("POST", "/communications/calls", {
                "callbackUri": bot_receiver.url,
                "targets": [{"identity": {"user": {"id": devsetup.ALICE}}}],
                "requestedModalities": ["audio"],
                "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}})
            assert answer.status == 201

        def test_sees_no_call(switchboard):
            assert switchboard.calls() == []
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_an_invalid_notification_fails_the_test_at_teardown(pytester, attached):
    pytester.makepyfile("""
        import urllib.error, urllib.request

        def test_posts_a_forged_notification(bot_receiver):
            forged = urllib.request.Request(bot_receiver.url, data=b'{"value": []}',
                                            headers={"Authorization": "Bearer forged"})
            try:
                urllib.request.urlopen(forged)
            except urllib.error.HTTPError as error:
                assert error.code == 401
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ReceiverProblems*", "*invalid token (DecodeError*"])


def test_without_switchboard_url_the_plugin_starts_a_server_and_exports_its_variables(
        pytester, monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_URL", raising=False)
    pytester.makepyfile("""
        import os

        def test_sees_the_variables(switchboard):
            assert os.environ["SWITCHBOARD_URL"] == switchboard.url
            assert os.environ["SWITCHBOARD_HTTPS_URL"] == switchboard.https_url
            assert os.environ["SSL_CERT_FILE"] == switchboard.ca_bundle
            assert os.environ["REQUESTS_CA_BUNDLE"] == switchboard.ca_bundle
            assert switchboard.started
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert "SWITCHBOARD_URL" not in os.environ


def test_switchboard_bin_option_names_the_binary(pytester, monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_URL", raising=False)
    pytester.makepyfile("""
        def test_needs_a_server(switchboard):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider",
                                "--switchboard-bin", str(pytester.path / "nothing-here"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*nothing-here is not an executable file*"])


@pytest.fixture
def attached(switchboard_server: Switchboard, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's server's variables in os.environ, so that inner runs attach to it."""
    for name, value in switchboard_server.env().items():
        monkeypatch.setenv(name, value)
