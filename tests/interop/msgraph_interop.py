#!/usr/bin/env python3
"""Interoperability test: drives a running Switchboard with the official Python `msgraph-sdk`,
the way a calling-bot developer would.

It builds nothing. It takes the switchboard binary from SWITCHBOARD_BIN (default
target/release/switchboard under the repository root), writes a temporary config, starts
`switchboard serve --store memory --clock virtual` on a free port, runs a callback receiver, and then
with `GraphServiceClient` (pointed at the server, authenticated by a small AsyncTokenCredential that
fetches tokens from the server's own token endpoint):

  1. creates a peer-to-peer call and checks the returned Call;
  2. advances the virtual clock 1 s (control API) and GETs the call: established;
  3. keepAlive;
  4. DELETE (hang up);
  5. GETs the call again: ODataError 404 with an error code and a request id;
  6. checks the notifications the receiver got.

Prints one line per failed check and a final line `interop: P/T checks passed`; exits 0 only if
every check passed. The server is always stopped with SIGTERM at the end.
"""
import asyncio
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ADMIN_TOKEN = "interop-admin-token"
TENANT_ID = "7d2f4e1a-3b5c-4a6d-8e9f-0a1b2c3d4e5f"
APP_ID = "c0ffee00-1111-4222-8333-444455556666"
APP_SECRET = "interop-secret"
PARTY_ID = "a11ce000-0000-4000-8000-000000000001"
ALL_ROLES = ["Calls.Initiate.All", "Calls.InitiateGroupCall.All", "Calls.JoinGroupCall.All",
             "Calls.JoinGroupCallAsGuest.All", "Calls.AccessMedia.All"]
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


# --- checks -------------------------------------------------------------------------------------
class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, label, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s%s" % (label, (": " + str(detail)[:600]) if detail != "" else ""),
                  flush=True)
        return bool(cond)

    def total(self):
        return self.passed + self.failed


# --- helpers ------------------------------------------------------------------------------------
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string for these values


def write_config(dirpath, port, incoming_uri):
    lines = [
        "public_url = %s" % toml_str("http://127.0.0.1:%d" % port), "",
        "[admin]", "token = %s" % toml_str(ADMIN_TOKEN), "",
        "[[apps]]",
        "app_id = %s" % toml_str(APP_ID),
        "tenant_id = %s" % toml_str(TENANT_ID),
        "client_secret = %s" % toml_str(APP_SECRET),
        "roles = [%s]" % ", ".join(toml_str(r) for r in ALL_ROLES),
        "incoming_call_uri = %s" % toml_str(incoming_uri), "",
        "[[parties]]",
        "id = %s" % toml_str(PARTY_ID),
        'kind = "user"',
        'display_name = "Alice Interop"',
        'behavior = "answer"',
        "answer_after_ms = 0", "",
    ]
    path = os.path.join(dirpath, "switchboard.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


class Server:
    """Runs `switchboard serve` on a free port; stop() sends SIGTERM."""

    def __init__(self, exe, workdir, incoming_uri):
        self.exe = exe
        self.dir = workdir
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.cfg = write_config(workdir, self.port, incoming_uri)
        self.log_path = os.path.join(workdir, "server.log")
        self.proc = None
        self.exit_code = None

    def start(self):
        self.log = open(self.log_path, "ab")
        args = [self.exe, "serve", "--listen", "127.0.0.1:%d" % self.port, "--store", "memory",
                "--config", self.cfg, "--clock", "virtual"]
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=subprocess.PIPE, stderr=self.log)
        lines = []
        found = threading.Event()

        def read_stdout():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                if re.search(r"switchboard listening on http://", line):
                    found.set()
            # keep draining until EOF so the server never blocks on a full pipe

        threading.Thread(target=read_stdout, daemon=True).start()
        end = time.time() + 30
        while time.time() < end and not found.is_set():
            if self.proc.poll() is not None:
                break
            found.wait(0.05)
        if not found.is_set():
            raise RuntimeError("server did not print 'switchboard listening on http://' "
                               "(exit %s); stdout %r; stderr tail %r"
                               % (self.proc.poll(), lines[-5:], self.tail()))

    def tail(self, n=600):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        return self.exit_code

    def admin(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/_switchboard/v1" + path, data=data,
                                     method=method,
                                     headers={"Authorization": "Bearer " + ADMIN_TOKEN,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


class Receiver:
    """Callback receiver: records every POST (headers and JSON body), answers 202."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with recv.lock:
                    recv.items.append({"path": self.path, "headers": dict(self.headers),
                                       "body": body})
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def notes(self, call_id):
        """Flattened call-level notifications for call_id: dicts with changeType, state,
        resultInfo, authorization."""
        out = []
        with self.lock:
            items = list(self.items)
        for it in items:
            body = it["body"] if isinstance(it["body"], dict) else {}
            auth = it["headers"].get("Authorization") or it["headers"].get("authorization") or ""
            for v in body.get("value") or []:
                url = (v.get("resourceUrl") or "").rstrip("/")
                if not url.lower().endswith("/calls/" + call_id.lower()):
                    continue  # operations, participants, other calls
                data = v.get("resourceData") or {}
                out.append({"changeType": str(v.get("changeType") or "").lower(),
                            "state": str(data.get("state") or "").lower(),
                            "resultInfo": data.get("resultInfo"),
                            "authorization": auth})
        return out

    async def wait_for(self, call_id, pred, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            ns = self.notes(call_id)
            if pred(ns):
                return ns
            await asyncio.sleep(0.05)
        return self.notes(call_id)


# --- the credential the SDK uses ----------------------------------------------------------------
def make_credential_class():
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential

    class SwitchboardClientCredential(AsyncTokenCredential):
        """Client-credentials grant against Switchboard's `/{tenant}/oauth2/v2.0/token`.

        azure-identity's ClientSecretCredential only accepts https authorities, so a bot that
        talks to Switchboard over plain http on loopback uses a credential like this one."""

        def __init__(self, authority, tenant_id, client_id, client_secret):
            self.token_url = "%s/%s/oauth2/v2.0/token" % (authority.rstrip("/"), tenant_id)
            self.client_id = client_id
            self.client_secret = client_secret
            self.fetches = 0
            self.scopes_seen = []
            self._cache = {}

        async def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False,
                            **kwargs):
            scope = " ".join(scopes) or GRAPH_SCOPE
            self.scopes_seen.append(scope)
            cached = self._cache.get(scope)
            if cached and cached.expires_on - 300 > time.time():
                return cached
            body = await asyncio.to_thread(self._fetch, scope)
            token = AccessToken(body["access_token"],
                                int(time.time()) + int(body.get("expires_in") or 3600))
            self._cache[scope] = token
            self.fetches += 1
            return token

        def _fetch(self, scope):
            form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                           "client_id": self.client_id,
                                           "client_secret": self.client_secret,
                                           "scope": scope}).encode()
            req = urllib.request.Request(
                self.token_url, data=form, method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(req, timeout=15) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                raise RuntimeError("token endpoint answered %d: %s"
                                   % (e.code, e.read()[:300].decode("utf-8", "replace")))

        async def close(self):
            pass

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            await self.close()

    return SwitchboardClientCredential


def enum_value(v):
    """An SDK enum member, or a plain string, as its wire string."""
    return getattr(v, "value", v)


# --- the scenario -------------------------------------------------------------------------------
async def scenario(c, server, receiver):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import \
        AzureIdentityAuthenticationProvider
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.call import Call
    from msgraph.generated.models.call_direction import CallDirection
    from msgraph.generated.models.call_state import CallState
    from msgraph.generated.models.identity import Identity
    from msgraph.generated.models.identity_set import IdentitySet
    from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
    from msgraph.generated.models.modality import Modality
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

    credential = make_credential_class()(server.base, TENANT_ID, APP_ID, APP_SECRET)
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE],
                                               allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = server.base + "/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

    # 1. create a peer-to-peer call
    callback_uri = receiver.url + "/api/callback"
    body = Call(
        callback_uri=callback_uri,
        targets=[InvitationParticipantInfo(identity=IdentitySet(user=Identity(
            id=PARTY_ID, display_name="Alice Interop")))],
        requested_modalities=[Modality.Audio],
        media_config=ServiceHostedMediaConfig(),
        tenant_id=TENANT_ID,
    )
    call = await client.communications.calls.post(body)
    c.ok("create: the SDK returned a Call", isinstance(call, Call), repr(call))
    if not isinstance(call, Call):
        return
    call_id = call.id
    print("created call %s (state %s, direction %s, myParticipantId %s)"
          % (call_id, enum_value(call.state), enum_value(call.direction),
             call.my_participant_id), flush=True)
    c.ok("create: id is set", bool(call_id), call_id)
    c.ok("create: state is establishing", call.state == CallState.Establishing,
         enum_value(call.state))
    c.ok("create: direction is outgoing", call.direction == CallDirection.Outgoing,
         enum_value(call.direction))
    c.ok("create: myParticipantId is set", bool(call.my_participant_id), call.my_participant_id)
    src_app = None
    try:
        src_app = call.source.identity.application.id
    except AttributeError:
        pass
    c.ok("create: source.identity.application.id is our app id",
         str(src_app or "").lower() == APP_ID.lower(), src_app)
    c.ok("create: callbackUri round-trips", call.callback_uri == callback_uri, call.callback_uri)
    c.ok("create: requestedModalities round-trip",
         list(call.requested_modalities or []) == [Modality.Audio], call.requested_modalities)
    c.ok("create: mediaConfig parsed as serviceHostedMediaConfig",
         isinstance(call.media_config, ServiceHostedMediaConfig), type(call.media_config))
    c.ok("credential: a token was fetched from the server's token endpoint",
         credential.fetches >= 1, credential.fetches)
    if not call_id:
        return

    # 2. advance the virtual clock, the callee answers
    status, raw = server.admin("POST", "/clock/advance", {"seconds": 1})
    c.ok("control: clock advance answered 200", status == 200, "%s %r" % (status, raw[:200]))
    got = await client.communications.calls.by_call_id(call_id).get()
    c.ok("get: state is established", got is not None and got.state == CallState.Established,
         enum_value(got.state) if got is not None else None)
    if got is not None:
        c.ok("get: same id", got.id == call_id, got.id)

    # 3. keepAlive
    try:
        await client.communications.calls.by_call_id(call_id).keep_alive.post()
        c.ok("keepAlive: no exception", True)
    except Exception as e:  # noqa: BLE001
        c.ok("keepAlive: no exception", False, "%s: %s" % (type(e).__name__, e))

    # 4. hang up
    try:
        await client.communications.calls.by_call_id(call_id).delete()
        c.ok("delete: no exception", True)
    except Exception as e:  # noqa: BLE001
        c.ok("delete: no exception", False, "%s: %s" % (type(e).__name__, e))

    # 5. the call is gone: ODataError 404. The SDK adds its own client-request-id only for
    # graph.microsoft.com hosts, so set one here the way a bot that correlates logs would.
    client_request_id = str(uuid.uuid4())
    config = RequestConfiguration()
    config.headers.add("client-request-id", client_request_id)
    try:
        gone = await client.communications.calls.by_call_id(call_id).get(
            request_configuration=config)
        c.ok("get after delete: raises ODataError", False, "returned %r" % (gone,))
    except ODataError as e:
        err = e.error
        inner = getattr(err, "inner_error", None) if err is not None else None
        print("ODataError exposed by the SDK: response_status_code=%r; error.code=%r; "
              "error.message=%r; inner_error: request_id=%r client_request_id=%r date=%r "
              "additional_data=%r; str(e)=%r"
              % (e.response_status_code, getattr(err, "code", None),
                 getattr(err, "message", None),
                 getattr(inner, "request_id", None), getattr(inner, "client_request_id", None),
                 getattr(inner, "date", None), getattr(inner, "additional_data", None), str(e)),
              flush=True)
        c.ok("get after delete: response_status_code 404", e.response_status_code == 404,
             e.response_status_code)
        c.ok("get after delete: error.code non-empty", bool(getattr(err, "code", None)),
             getattr(err, "code", None))
        c.ok("get after delete: error.message non-empty", bool(getattr(err, "message", None)),
             getattr(err, "message", None))
        c.ok("get after delete: inner_error.request_id non-empty",
             bool(getattr(inner, "request_id", None)), inner)
        c.ok("get after delete: inner_error.client_request_id echoes ours",
             getattr(inner, "client_request_id", None) == client_request_id,
             "%r != %r" % (getattr(inner, "client_request_id", None), client_request_id))
        headers = {k.lower(): v for k, v in (e.response_headers or {}).items()}
        c.ok("get after delete: response header request-id matches inner_error",
             bool(headers.get("request-id"))
             and headers.get("request-id") == getattr(inner, "request_id", None),
             "%r vs %r" % (headers.get("request-id"), getattr(inner, "request_id", None)))
        c.ok("get after delete: inner_error.date parsed", getattr(inner, "date", None) is not None,
             inner)
    except Exception as e:  # noqa: BLE001
        c.ok("get after delete: raises ODataError", False, "%s: %s" % (type(e).__name__, e))

    # 6. notifications
    def complete(ns):
        return any(n["changeType"] == "deleted" and n["state"] == "terminated" for n in ns)

    ns = await receiver.wait_for(call_id, complete, timeout=10.0)
    seq = [(n["changeType"], n["state"]) for n in ns]
    print("notifications for the call: %s" % seq, flush=True)

    def index(change, state):
        for i, n in enumerate(ns):
            if n["changeType"] == change and n["state"] == state:
                return i
        return -1

    i_est, i_ested = index("updated", "establishing"), index("updated", "established")
    i_term, i_del = index("updated", "terminating"), index("deleted", "terminated")
    c.ok("notify: updated/establishing", i_est >= 0, seq)
    c.ok("notify: updated/established", i_ested >= 0, seq)
    c.ok("notify: updated/terminating", i_term >= 0, seq)
    c.ok("notify: deleted/terminated", i_del >= 0, seq)
    c.ok("notify: terminating after establishing and established",
         i_term > max(i_est, i_ested) >= 0, seq)
    c.ok("notify: deleted/terminated after updated/terminating", i_del > i_term >= 0, seq)
    if i_del >= 0:
        ri = ns[i_del]["resultInfo"] or {}
        try:
            got_ri = (int(ri.get("code")), int(ri.get("subcode")))
        except (TypeError, ValueError):
            got_ri = (ri.get("code"), ri.get("subcode"))
        c.ok("notify: terminated resultInfo is 200/5001", got_ri == (200, 5001), ri)
    c.ok("notify: every notification has Authorization: Bearer",
         bool(ns) and all(re.match(r"(?i)^bearer\s+\S+", n["authorization"]) for n in ns),
         [n["authorization"][:20] for n in ns])


def main():
    c = Checks()
    exe = os.environ.get("SWITCHBOARD_BIN") or os.path.join(REPO, "target", "release",
                                                           "switchboard")
    exe = os.path.abspath(exe)
    if not os.access(exe, os.X_OK):
        print("FAIL switchboard binary not found or not executable: %s" % exe)
        print("interop: 0/1 checks passed")
        return 1

    try:
        import msgraph  # noqa: F401
        from importlib.metadata import version
        print("msgraph-sdk %s, microsoft-kiota-http %s, azure-core %s"
              % (version("msgraph-sdk"), version("microsoft-kiota-http"), version("azure-core")),
              flush=True)
    except Exception as e:  # noqa: BLE001
        print("FAIL msgraph-sdk is not importable: %s" % e)
        print("interop: 0/1 checks passed")
        return 1

    workdir = tempfile.mkdtemp(prefix="sb-interop-")
    receiver = Receiver()
    server = Server(exe, workdir, receiver.url + "/api/incoming")
    try:
        server.start()
        asyncio.run(asyncio.wait_for(scenario(c, server, receiver), timeout=120))
    except Exception:  # noqa: BLE001
        c.ok("scenario ran to its end", False, traceback.format_exc()[-1500:])
    finally:
        code = server.stop()
        receiver.close()
    if server.proc is not None:
        c.ok("server exited 0 on SIGTERM", code == 0, "exit %s; stderr tail %r"
             % (code, server.tail(300)))
    if c.failed:
        print("server log kept in %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print("interop: %d/%d checks passed" % (c.passed, c.total()), flush=True)
    return 0 if c.failed == 0 and c.total() > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
