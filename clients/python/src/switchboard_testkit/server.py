"""A running Switchboard server: start one or attach to one, and steer it through its APIs."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, cast

from . import devsetup
from ._http import GraphResponse, request
from .faults import ApiFault, FaultRules, NotificationFault

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
CONTROL = "/_switchboard/v1"
_LISTENING = re.compile(r"switchboard listening on http://")


class SwitchboardError(Exception):
    """Switchboard answered a control or token request with an error, or could not be started."""

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.code = code


class Switchboard:
    """A running Switchboard: its URLs and app credentials, and helpers for every control route.

    Make one with `Switchboard.start()` (a server of its own, stopped by `stop()`) or
    `Switchboard.from_env()` (the server `switchboard exec` started).
    """

    def __init__(self, url: str, https_url: str, *, app_id: str = devsetup.APP_ID,
                 tenant_id: str = devsetup.TENANT_ID,
                 client_secret: str = devsetup.CLIENT_SECRET, ca_file: Optional[str] = None,
                 ca_bundle: Optional[str] = None, admin_token: Optional[str] = None):
        self.url = url.rstrip("/")
        self.https_url = https_url.rstrip("/")
        self.app_id = app_id
        self.tenant_id = tenant_id
        self.client_secret = client_secret
        self.ca_file = ca_file
        self.ca_bundle = ca_bundle
        self.admin_token = admin_token
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._workdir: Optional[str] = None

    # --- starting and stopping ------------------------------------------------------------

    @classmethod
    def start(cls, bin: Optional[str] = None, config: Optional[str] = None,
              admin_token: Optional[str] = None, timeout: float = 30.0) -> "Switchboard":
        """Starts `switchboard serve` on a free port of 127.0.0.1 (memory store, virtual clock,
        https public URL) and returns once it listens.

        The binary is `bin`, else `$SWITCHBOARD_BIN`, else `switchboard` on the PATH. Without
        `config` the server runs the development setup; with it, the app is the file's first
        `[[apps]]` entry. `admin_token` overrides the file's `[admin] token`.
        """
        exe = _find_binary(bin)
        app = _first_app(config) if config else {}
        admin = admin_token or os.environ.get("SWITCHBOARD_ADMIN_TOKEN") or app.get("admin_token")
        workdir = tempfile.mkdtemp(prefix="switchboard-testkit-")
        try:
            process, port = _serve(exe, config, admin_token, workdir, timeout)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        server = cls("http://127.0.0.1:%d" % port, "https://127.0.0.1:%d" % port,
                     app_id=app.get("app_id", devsetup.APP_ID),
                     tenant_id=app.get("tenant_id", devsetup.TENANT_ID),
                     client_secret=app.get("client_secret", devsetup.CLIENT_SECRET),
                     admin_token=admin)
        server._process = process
        server._workdir = workdir
        try:
            server.ca_file, server.ca_bundle = server._write_trust(workdir)
        except BaseException:
            server.stop()
            raise
        return server

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Switchboard":
        """Attaches to the server named by the variables `switchboard exec` sets
        (`SWITCHBOARD_URL`, `SWITCHBOARD_HTTPS_URL`, `SWITCHBOARD_APP_ID`, ...)."""
        env = os.environ if environ is None else environ
        url = env.get("SWITCHBOARD_URL")
        if not url:
            raise SwitchboardError("SWITCHBOARD_URL is not set: run the tests under "
                                   "`switchboard exec -- ...`, or use Switchboard.start()")
        https_url = env.get("SWITCHBOARD_HTTPS_URL") or url.replace("http://", "https://", 1)
        return cls(url, https_url,
                   app_id=env.get("SWITCHBOARD_APP_ID") or devsetup.APP_ID,
                   tenant_id=env.get("SWITCHBOARD_TENANT_ID") or devsetup.TENANT_ID,
                   client_secret=env.get("SWITCHBOARD_CLIENT_SECRET") or devsetup.CLIENT_SECRET,
                   ca_file=env.get("SWITCHBOARD_CA_FILE") or None,
                   ca_bundle=env.get("SSL_CERT_FILE") or None,
                   admin_token=env.get("SWITCHBOARD_ADMIN_TOKEN") or None)

    @classmethod
    def connect(cls, bin: Optional[str] = None, config: Optional[str] = None) -> "Switchboard":
        """`from_env()` when SWITCHBOARD_URL is set, otherwise `start(bin, config)`."""
        if os.environ.get("SWITCHBOARD_URL"):
            return cls.from_env()
        return cls.start(bin=bin, config=config)

    def stop(self) -> None:
        """Stops a server that `start()` started (SIGTERM) and removes its files; a server
        attached with `from_env()` is left running."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @property
    def started(self) -> bool:
        """Whether this handle started the server (and `stop()` ends it)."""
        return self._process is not None

    def __enter__(self) -> "Switchboard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> Dict[str, str]:
        """The variables `switchboard exec` gives a command, for this server: its URLs, the app's
        ids and secret, a token, and the trust of its HTTPS (`SSL_CERT_FILE`, ...)."""
        env = {"SWITCHBOARD_URL": self.url, "SWITCHBOARD_HTTPS_URL": self.https_url,
               "SWITCHBOARD_APP_ID": self.app_id, "SWITCHBOARD_TENANT_ID": self.tenant_id,
               "SWITCHBOARD_CLIENT_SECRET": self.client_secret,
               "SWITCHBOARD_TOKEN": self.token()}
        if self.admin_token:
            env["SWITCHBOARD_ADMIN_TOKEN"] = self.admin_token
        if self.ca_file:
            env["SWITCHBOARD_CA_FILE"] = self.ca_file
            env["NODE_EXTRA_CA_CERTS"] = self.ca_file
        if self.ca_bundle:
            for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
                env[name] = self.ca_bundle
        return env

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that trusts this server's certificate (its local authority)."""
        return ssl.create_default_context(cafile=self.ca_file)

    # --- Graph ----------------------------------------------------------------------------

    def token(self) -> str:
        """A Graph app token for the app, from the token endpoint (reused until near its end)."""
        if self._token is None or time.time() > self._token_expires:
            form = urllib.parse.urlencode({
                "grant_type": "client_credentials", "client_id": self.app_id,
                "client_secret": self.client_secret, "scope": GRAPH_SCOPE}).encode()
            answer = request("POST", "%s/%s/oauth2/v2.0/token" % (self.url, self.tenant_id),
                             data=form,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            if answer.status != 200:
                raise SwitchboardError(
                    "the token endpoint answered %d: %s; check the app id, tenant and secret"
                    % (answer.status, answer.body), answer.status)
            self._token = answer.body["access_token"]
            self._token_expires = time.time() + int(answer.body.get("expires_in", 3599)) - 300
        return self._token

    def graph(self, method: str, path: str, json: Any = None) -> GraphResponse:
        """Sends a Graph request with the app's token. `path` is under `/v1.0` unless it starts
        with `/v1.0` or `/beta`. Returns the answer whatever its status."""
        if not path.startswith(("/v1.0/", "/beta/")):
            path = "/v1.0" + ("" if path.startswith("/") else "/") + path
        return request(method, self.url + path, json,
                       headers={"Authorization": "Bearer " + self.token()})

    # --- the control API ------------------------------------------------------------------

    def control(self, method: str, path: str, json: Any = None) -> Any:
        """Sends a request to the control API (`path` under `/_switchboard/v1`) and returns its
        parsed body; raises SwitchboardError on an error status."""
        headers = {"Authorization": "Bearer " + self.admin_token} if self.admin_token else {}
        answer = request(method, self.url + CONTROL + path, json, headers=headers, timeout=90)
        if answer.status >= 400:
            raise _control_error(method, path, answer)
        return answer.body

    def reset(self) -> None:
        """Empties the server (calls, notifications, party history, recordings); the clock
        stays where it is."""
        self.control("POST", "/reset")

    def advance(self, seconds: float, settle: bool = True) -> datetime:
        """Moves the virtual clock forward and runs what fell due. With `settle`, returns once
        every notification due by then has had its delivery attempt. Returns the new time."""
        body = self.control("POST", "/clock/advance", {"seconds": seconds, "settle": settle})
        return _parse_time(body["now"])

    def clock_now(self) -> datetime:
        """The call clock's time."""
        return _parse_time(self.control("GET", "/clock")["now"])

    def party(self, party_id: str) -> Dict[str, Any]:
        """A party: its calls and the commands it received (`heard`)."""
        return cast(Dict[str, Any], self.control("GET", "/parties/" + _quote(party_id)))

    def hang_up(self, party_id: str) -> List[str]:
        """The party hangs up every call it is in. Returns the bots' calls that ended."""
        ended = self.control("POST", "/parties/%s/hangup" % _quote(party_id))["callsEnded"]
        return cast(List[str], ended)

    def press(self, party_id: str, keys: str) -> List[str]:
        """The party presses keys (`0`-`9`, `*`, `#`, `A`-`D`) in every established call it is
        in. Returns the bots' calls that heard them."""
        heard = self.control("POST", "/parties/%s/tones" % _quote(party_id), {"tones": keys})
        return cast(List[str], heard["callIds"])

    def dial(self, party_id: str, app_id: Optional[str] = None,
             callback_uri: Optional[str] = None) -> str:
        """The party calls an app (by default this one). The incoming-call notification goes to
        `callback_uri`, else to the app's `incoming_call_uri`. Returns the new call's id."""
        body = {"appId": app_id or self.app_id}
        if callback_uri:
            body["incomingCallUri"] = callback_uri
        return str(self.control("POST", "/parties/%s/dial" % _quote(party_id), body)["callId"])

    def fail_call(self, call_id: str, code: int, subcode: int) -> Dict[str, Any]:
        """Ends a live call now with this end reason (docs/END-REASONS.md), for example
        410/301005, a media connectivity failure. Returns its `resultInfo`."""
        ended = self.control("POST", "/calls/%s/fail" % _quote(call_id),
                             {"code": code, "subcode": subcode})
        return cast(Dict[str, Any], ended["resultInfo"])

    def calls(self, state: Optional[str] = None,
              app_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """The live calls, oldest first, optionally only those in `state` or of `app_id`."""
        query = {k: v for k, v in (("state", state), ("appId", app_id)) if v}
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return cast(List[Dict[str, Any]], self.control("GET", "/calls" + suffix)["value"])

    def deliveries(self, call_id: str) -> List[Dict[str, Any]]:
        """Every notification of a call, in order, with each attempt to deliver it."""
        log = self.control("GET", "/calls/%s/deliveries" % _quote(call_id))
        return cast(List[Dict[str, Any]], log["notifications"])

    def redeliver(self, call_id: str, sequence: int) -> Dict[str, Any]:
        """Sends one notification of a call again, now. Returns the attempt and its status."""
        return cast(Dict[str, Any], self.control(
            "POST", "/calls/%s/deliveries/%d/redeliver" % (_quote(call_id), sequence)))

    def meeting(self, join_meeting_id: str) -> Dict[str, Any]:
        """A configured meeting: who is in it now, and how a bot finds it."""
        return cast(Dict[str, Any], self.control("GET", "/meetings/" + _quote(join_meeting_id)))

    def set_faults(self, seed: Optional[int] = None, api: Optional[Sequence[ApiFault]] = None,
                   notifications: Optional[Sequence[NotificationFault]] = None) -> FaultRules:
        """Replaces the fault rules with these (none given: no rules) and starts their random
        choices again from `seed` (the server picks one if None). Returns the rules in force,
        every key filled in, with the seed."""
        body: Dict[str, Any] = {}
        if seed is not None:
            body["seed"] = seed
        if api is not None:
            body["api"] = list(api)
        if notifications is not None:
            body["notifications"] = list(notifications)
        return cast(FaultRules, self.control("PUT", "/faults", body))

    def faults(self) -> FaultRules:
        """The fault rules in force, with the seed their random choices are drawn from."""
        return cast(FaultRules, self.control("GET", "/faults"))

    def clear_faults(self) -> None:
        """Removes every fault rule, until `reset()` brings back those of `[faults]`."""
        self.control("PUT", "/faults", {})

    # --- internals ------------------------------------------------------------------------

    def _write_trust(self, folder: str) -> Tuple[Optional[str], Optional[str]]:
        """Writes the local authority's certificate, and a bundle of the system's authorities
        plus it; (None, None) when the server has no local authority."""
        answer = request("GET", self.url + CONTROL + "/ca.pem")
        if answer.status != 200:
            return None, None
        pem = answer.body if isinstance(answer.body, str) else ""
        ca_file = os.path.join(folder, "ca.pem")
        with open(ca_file, "w") as f:
            f.write(pem)
        bundle = os.path.join(folder, "ca-bundle.pem")
        with open(bundle, "w") as f:
            system = _system_roots()
            if system:
                with open(system) as roots:
                    f.write(roots.read().rstrip("\n") + "\n")
            f.write(pem)
        return ca_file, bundle


class _PortTaken(Exception):
    """The chosen port was taken before the server bound it."""


def _find_binary(bin: Optional[str]) -> str:
    exe = bin or os.environ.get("SWITCHBOARD_BIN") or shutil.which("switchboard")
    if not exe:
        raise SwitchboardError("no switchboard binary: pass bin= (pytest: --switchboard-bin), "
                               "set SWITCHBOARD_BIN, or put `switchboard` on the PATH (cargo "
                               "install --path . in its repository); or run the tests under "
                               "`switchboard exec`")
    if not os.access(exe, os.X_OK):
        raise SwitchboardError("%s is not an executable file; point SWITCHBOARD_BIN at the "
                               "switchboard binary" % exe)
    return os.path.abspath(exe)


def _first_app(config: str) -> Dict[str, str]:
    """The first `[[apps]]` entry of a configuration file, and its `[admin] token`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    with open(config, "rb") as f:
        data = tomllib.load(f)
    apps = data.get("apps") or []
    if not apps:
        raise SwitchboardError("%s has no [[apps]] entry: the test kit needs an app" % config)
    app = {k: str(apps[0][k]) for k in ("app_id", "tenant_id", "client_secret") if k in apps[0]}
    token = (data.get("admin") or {}).get("token")
    if token:
        app["admin_token"] = str(token)
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(exe: str, config: Optional[str], admin_token: Optional[str], workdir: str,
           timeout: float) -> Tuple["subprocess.Popen[bytes]", int]:
    """Starts the server on a free port, choosing again if another process takes it first."""
    for _ in range(3):
        port = _free_port()
        process = _spawn(exe, port, config, admin_token, workdir)
        try:
            _wait_listening(process, workdir, timeout)
            return process, port
        except _PortTaken:
            continue
    raise SwitchboardError("switchboard found no free port in three tries; its log ends:\n"
                           + _log_tail(workdir))


def _spawn(exe: str, port: int, config: Optional[str], admin_token: Optional[str],
           workdir: str) -> "subprocess.Popen[bytes]":
    args = [exe, "serve", "--listen", "127.0.0.1:%d" % port, "--store", "memory",
            "--clock", "virtual"]
    if config:
        args += ["--config", os.path.abspath(config)]
    env = dict(os.environ, SWITCHBOARD_PUBLIC_URL="https://127.0.0.1:%d" % port)
    if admin_token:
        env["SWITCHBOARD_ADMIN_TOKEN"] = admin_token
    log = open(os.path.join(workdir, "server.log"), "ab")
    try:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env)
    finally:
        log.close()


def _wait_listening(process: "subprocess.Popen[bytes]", workdir: str, timeout: float) -> None:
    """Returns once the server printed its listening line; raises with its log otherwise."""
    ready = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        for raw in process.stdout:  # read to the end, so the server never blocks on the pipe
            if _LISTENING.search(raw.decode("utf-8", "replace")):
                ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.02):
        if process.poll() is not None or time.monotonic() > deadline:
            break
    if ready.is_set():
        return
    if process.poll() is None:
        process.kill()
        process.wait()
    log = _log_tail(workdir)
    if "Address already in use" in log:
        raise _PortTaken()
    raise SwitchboardError("switchboard did not start (exit %s within %.0f s); its log ends:\n%s"
                           % (process.returncode, timeout, log))


def _log_tail(workdir: str) -> str:
    with open(os.path.join(workdir, "server.log"), "rb") as f:
        return f.read().decode("utf-8", "replace")[-2000:]


def _system_roots() -> Optional[str]:
    """The file of the authorities this machine trusts, if one is found."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile,
                      "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                      "/etc/ssl/cert.pem"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _control_error(method: str, path: str, answer: GraphResponse) -> SwitchboardError:
    error = answer.body.get("error", {}) if isinstance(answer.body, dict) else {}
    code = error.get("code")
    message = error.get("message") or answer.body
    hint = ""
    if answer.status in (401, 403):
        hint = (" (the control API needs the admin token when [admin] token is set, and serves "
                "only loopback clients otherwise)")
    return SwitchboardError("%s %s%s answered %d %s: %s%s"
                            % (method, CONTROL, path, answer.status, code or "", message, hint),
                            answer.status, code)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
