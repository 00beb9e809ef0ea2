"""The pytest plugin: fixtures that give each test a clean Switchboard and a bot receiver.

Loaded by pytest through the `pytest11` entry point once the package is installed.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from .receiver import Receiver
from .server import Switchboard


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("switchboard", "Switchboard test kit")
    group.addoption("--switchboard-bin", default=None, metavar="PATH",
                    help="the switchboard binary to start (default: $SWITCHBOARD_BIN, else "
                         "`switchboard` on the PATH); unused when SWITCHBOARD_URL is set")
    group.addoption("--switchboard-config", default=None, metavar="FILE",
                    help="the configuration file to start it with (default: "
                         "$SWITCHBOARD_CONFIG, else the development setup)")


@pytest.fixture(scope="session")
def switchboard_server(request: pytest.FixtureRequest) -> Iterator[Switchboard]:
    """The session's server: the one `switchboard exec` started when SWITCHBOARD_URL is set,
    otherwise one started for the session, whose variables (as `switchboard exec` sets them:
    SWITCHBOARD_URL, ..., SSL_CERT_FILE, REQUESTS_CA_BUNDLE) are in os.environ meanwhile."""
    server = Switchboard.connect(
        bin=request.config.getoption("switchboard_bin"),
        config=request.config.getoption("switchboard_config")
        or os.environ.get("SWITCHBOARD_CONFIG") or None)
    if not server.started:  # attached: its variables are in the environment already
        yield server
        return
    variables = server.env()
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def switchboard(switchboard_server: Switchboard) -> Switchboard:
    """The session's server, reset before the test: no calls, notifications or history."""
    switchboard_server.reset()
    return switchboard_server


@pytest.fixture
def bot_receiver(switchboard: Switchboard) -> Iterator[Receiver]:
    """A receiver for the app's notifications at `bot_receiver.url`. After the test it fails the
    test if a notification had an invalid token or its `on_notification` handler raised."""
    receiver = Receiver(switchboard)
    yield receiver
    receiver.close()
    receiver.assert_clean()
