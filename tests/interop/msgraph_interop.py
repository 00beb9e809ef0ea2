#!/usr/bin/env python3
"""Interoperability test: drives a running Switchboard with the official Python `msgraph-sdk`,
the way a calling-bot developer would.

It builds nothing. It takes the switchboard binary from SWITCHBOARD_BIN (default
target/release/switchboard under the repository root), writes a temporary config, starts
`switchboard serve --store memory --clock virtual` on a free port, runs a callback receiver, and then
with `GraphServiceClient` pointed at the server over HTTPS, authenticated by azure-identity's own
`ClientSecretCredential` with the server as its authority (no token shim): the process trusts the
server's local certificate authority (fetched from `/_switchboard/v1/ca.pem` over plain HTTP) through
`SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE`, as docs/TLS.md tells a bot developer to:

  1. creates a peer-to-peer call and checks the returned Call;
  2. advances the virtual clock 1 s (control API) and GETs the call: established;
  3. keepAlive;
  4. DELETE (hang up);
  5. GETs the call again: ODataError 404 with an error code and a request id;
  6. checks the notifications the receiver got;
  7. group call (two targets): the typed participant list (the bot's entry has
     id == myParticipantId), one participant, invite (InviteParticipantsOperation Running, then its
     completion notification), mute, removal, and ODataError 404 for an unknown participant;
  8. meeting join by JoinMeetingIdMeetingInfo: ODataError 403 for a wrong passcode and 404 for an
     unknown meeting id, then the Call with meetingInfo and chatInfo, and the roster.

Notifications are checked as plain JSON (the SDK has no notification parser in use here).

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
# group call: two targets, then one more invited
BOB_ID = "b0b00000-0000-4000-8000-000000000002"
CAROL_ID = "ca401000-0000-4000-8000-000000000003"
DAVE_ID = "da4e0000-0000-4000-8000-000000000004"
# the meeting the bot joins by joinMeetingId; Erin and Frank are already in it
ERIN_ID = "e4140000-0000-4000-8000-000000000005"
FRANK_ID = "f4a40000-0000-4000-8000-000000000006"
MEETING_ID = "4711081501"
MEETING_PASSCODE = "interop-pass"
# every party answers at once: (id, display name)
PARTIES = [(PARTY_ID, "Alice Interop"), (BOB_ID, "Bob Interop"), (CAROL_ID, "Carol Interop"),
           (DAVE_ID, "Dave Interop"), (ERIN_ID, "Erin Interop"), (FRANK_ID, "Frank Interop")]
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
        "public_url = %s" % toml_str("https://127.0.0.1:%d" % port), "",
        "[admin]", "token = %s" % toml_str(ADMIN_TOKEN), "",
        "[[apps]]",
        "app_id = %s" % toml_str(APP_ID),
        "tenant_id = %s" % toml_str(TENANT_ID),
        "client_secret = %s" % toml_str(APP_SECRET),
        "roles = [%s]" % ", ".join(toml_str(r) for r in ALL_ROLES),
        "incoming_call_uri = %s" % toml_str(incoming_uri), "",
    ]
    for party_id, name in PARTIES:
        lines += ["[[parties]]",
                  "id = %s" % toml_str(party_id),
                  'kind = "user"',
                  "display_name = %s" % toml_str(name),
                  'behavior = "answer"',
                  "answer_after_ms = 0", ""]
    lines += ["[[meetings]]",
              "join_meeting_id = %s" % toml_str(MEETING_ID),
              "passcode = %s" % toml_str(MEETING_PASSCODE),
              "parties = [%s]" % ", ".join(toml_str(p) for p in (ERIN_ID, FRANK_ID)), ""]
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
        self.https = "https://127.0.0.1:%d" % self.port
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

    def notes_on(self, resource_url):
        """Raw notifications (changeType, resourceData) whose resourceUrl is resource_url."""
        with self.lock:
            items = list(self.items)
        out = []
        for it in items:
            body = it["body"] if isinstance(it["body"], dict) else {}
            for v in body.get("value") or []:
                url = (v.get("resourceUrl") or "").rstrip("/").lower()
                if url.endswith(resource_url.rstrip("/").lower()):
                    out.append(v)
        return out

    async def wait_for(self, call_id, pred, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            ns = self.notes(call_id)
            if pred(ns):
                return ns
            await asyncio.sleep(0.05)
        return self.notes(call_id)


def token_requests(server):
    """How many token requests the server answered 200 (its /metrics)."""
    req = urllib.request.Request(server.base + "/metrics",
                                 headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    with urllib.request.urlopen(req, timeout=15) as r:
        text = r.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("switchboard_http_requests_total{") and "token" in line
               and 'status="200"' in line)


# --- trusting the server's authority ------------------------------------------------------------
def trust_server_authority(server):
    """Fetches the server's local certificate authority over plain HTTP and makes this process
    trust it (and only it: the test talks to nothing else), as docs/TLS.md says."""
    with urllib.request.urlopen(server.base + "/_switchboard/v1/ca.pem", timeout=15) as r:
        pem = r.read()
    path = os.path.join(server.dir, "switchboard-ca.pem")
    with open(path, "wb") as f:
        f.write(pem)
    os.environ["SSL_CERT_FILE"] = path          # OpenSSL: aiohttp (azure-identity), httpx
    os.environ["REQUESTS_CA_BUNDLE"] = path     # requests (MSAL)
    return path


def enum_value(v):
    """An SDK enum member, or a plain string, as its wire string."""
    return getattr(v, "value", v)


# --- the scenario -------------------------------------------------------------------------------
def make_client(server):
    """A GraphServiceClient pointed at the server, and the credential it uses."""
    from kiota_authentication_azure.azure_identity_authentication_provider import \
        AzureIdentityAuthenticationProvider
    from msgraph import GraphRequestAdapter, GraphServiceClient

    from azure.identity.aio import ClientSecretCredential

    trust_server_authority(server)
    # The real credential class, its authority the server: it posts to the server's token
    # endpoint. Instance discovery would ask Microsoft's own hosts, so it is turned off.
    credential = ClientSecretCredential(TENANT_ID, APP_ID, APP_SECRET, authority=server.https,
                                        disable_instance_discovery=True)
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE],
                                               allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = server.https + "/v1.0"
    return GraphServiceClient(request_adapter=adapter), credential


async def scenario(c, server, receiver):
    client, credential = make_client(server)
    parts = [("peer-to-peer call", lambda: p2p_call_checks(c, client, credential, server, receiver)),
             ("group call", lambda: group_call_checks(c, client, server, receiver)),
             ("meeting join", lambda: meeting_join_checks(c, client, server, receiver))]
    for name, run in parts:
        try:
            await run()
        except Exception as e:  # noqa: BLE001
            here = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            c.ok("%s: checks ran to their end" % name, False, "%s: %s (line %s)"
                 % (type(e).__name__, e, here[-1].lineno if here else "?"))
    await credential.close()


async def p2p_call_checks(c, client, credential, server, receiver):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.call import Call
    from msgraph.generated.models.call_direction import CallDirection
    from msgraph.generated.models.call_state import CallState
    from msgraph.generated.models.identity import Identity
    from msgraph.generated.models.identity_set import IdentitySet
    from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
    from msgraph.generated.models.modality import Modality
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

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
    tokens = token_requests(server)
    c.ok("credential: ClientSecretCredential fetched its token from the server over HTTPS",
         tokens >= 1, tokens)
    # MSAL itself, as a bot that asks for its token directly does: it reads the tenant's
    # metadata first (and refuses one without authorization_endpoint).
    import msal
    msal_app = msal.ConfidentialClientApplication(
        APP_ID, client_credential=APP_SECRET, authority="%s/%s" % (server.https, TENANT_ID),
        instance_discovery=False)
    got = msal_app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    c.ok("msal: ConfidentialClientApplication got a token from the server over HTTPS",
         str(got.get("access_token", "")).startswith("eyJ"),
         {k: v for k, v in got.items() if k != "access_token"})
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


# --- group calls and meetings -------------------------------------------------------------------
async def eventually(fetch, pred, timeout=3.0):
    """Calls `await fetch()` until pred(result) holds or timeout passes; returns the last result
    (the server may apply a change a moment after answering the request that caused it)."""
    end = time.time() + timeout
    while True:
        got = await fetch()
        if pred(got) or time.time() >= end:
            return got
        await asyncio.sleep(0.1)


async def expect_odata_error(c, label, request, status):
    """Runs `await request()` and checks that the SDK raises ODataError with HTTP `status`
    and a non-empty error code."""
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    try:
        got = await request()
        c.ok("%s: raises ODataError" % label, False, "returned %r" % (got,))
    except ODataError as e:
        err = e.error
        c.ok("%s: raises ODataError" % label, True)
        c.ok("%s: response_status_code %d" % (label, status), e.response_status_code == status,
             "%s (error.code=%r, message=%r)" % (e.response_status_code,
                                                 getattr(err, "code", None),
                                                 getattr(err, "message", None)))
        c.ok("%s: error.code non-empty" % label, bool(getattr(err, "code", None)), err)
    except Exception as e:  # noqa: BLE001
        c.ok("%s: raises ODataError" % label, False, "%s: %s" % (type(e).__name__, e))


def identity_id(participant, kind):
    """participant.info.identity.<kind>.id, lower-case, or None."""
    try:
        return str(getattr(participant.info.identity, kind).id).lower()
    except AttributeError:
        return None


def roster_ids(collection):
    """{participant id: user id or 'app:<app id>'} of a ParticipantCollectionResponse."""
    out = {}
    for p in (collection.value if collection is not None else None) or []:
        who = identity_id(p, "user")
        if who is None and identity_id(p, "application") is not None:
            who = "app:" + identity_id(p, "application")
        out[p.id] = who
    return out


def check_roster(c, label, collection, my_participant_id, party_ids):
    """The typed participant list holds the bot (id == myParticipantId, identity.application =
    our app) and exactly the users party_ids, each a well-formed Participant."""
    from msgraph.generated.models.identity_set import IdentitySet
    from msgraph.generated.models.media_direction import MediaDirection
    from msgraph.generated.models.media_stream import MediaStream
    from msgraph.generated.models.modality import Modality
    from msgraph.generated.models.participant import Participant
    from msgraph.generated.models.participant_collection_response import \
        ParticipantCollectionResponse
    from msgraph.generated.models.participant_info import ParticipantInfo

    if not c.ok("%s: the SDK returned a ParticipantCollectionResponse" % label,
                isinstance(collection, ParticipantCollectionResponse), repr(collection)):
        return
    value = collection.value or []
    ids = roster_ids(collection)
    print("%s: roster %s" % (label, ids), flush=True)
    c.ok("%s: every entry is a Participant" % label,
         bool(value) and all(isinstance(p, Participant) for p in value),
         [type(p).__name__ for p in value])
    c.ok("%s: @odata.context names the participants collection" % label,
         str(collection.additional_data.get("@odata.context", "")).endswith("/participants"),
         collection.additional_data.get("@odata.context"))
    c.ok("%s: the bot's own entry has id == myParticipantId" % label,
         ids.get(my_participant_id) == "app:" + APP_ID.lower(), "%s not in %s"
         % (my_participant_id, ids))
    users = sorted(v for v in ids.values() if v and not v.startswith("app:"))
    c.ok("%s: users are exactly %s" % (label, party_ids), users == sorted(party_ids), users)
    c.ok("%s: participant ids are unique and set" % label,
         len(ids) == len(value) and all(ids), [p.id for p in value])
    shapes = []
    for p in value:
        stream = (p.media_streams or [None])[0]
        shapes.append((isinstance(p.info, ParticipantInfo),
                       isinstance(getattr(p.info, "identity", None), IdentitySet),
                       getattr(p.info, "participant_id", None) == p.id,
                       p.is_in_lobby is False, isinstance(p.is_muted, bool),
                       isinstance(stream, MediaStream)
                       and stream.media_type == Modality.Audio
                       and stream.direction == MediaDirection.SendReceive
                       and bool(stream.source_id) and isinstance(stream.server_muted, bool)))
    c.ok("%s: info/identity/participantId/isInLobby/isMuted/mediaStreams parse" % label,
         bool(shapes) and all(all(s) for s in shapes), shapes)


def advance(c, server, label, seconds=1):
    status, raw = server.admin("POST", "/clock/advance", {"seconds": seconds})
    c.ok("%s: clock advance answered 200" % label, status == 200, "%s %r" % (status, raw[:200]))


async def group_call_checks(c, client, server, receiver):
    """A group call with two targets, then the participants API through the SDK's builders."""
    from msgraph.generated.communications.calls.item.participants.invite.\
        invite_post_request_body import InvitePostRequestBody
    from msgraph.generated.communications.calls.item.participants.item.mute.\
        mute_post_request_body import MutePostRequestBody
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_http.middleware.options.headers_inspection_handler_option import \
        HeadersInspectionHandlerOption
    from msgraph.generated.models.call import Call
    from msgraph.generated.models.call_state import CallState
    from msgraph.generated.models.chat_info import ChatInfo
    from msgraph.generated.models.identity import Identity
    from msgraph.generated.models.identity_set import IdentitySet
    from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
    from msgraph.generated.models.invite_participants_operation import \
        InviteParticipantsOperation
    from msgraph.generated.models.modality import Modality
    from msgraph.generated.models.mute_participant_operation import MuteParticipantOperation
    from msgraph.generated.models.operation_status import OperationStatus
    from msgraph.generated.models.participant import Participant
    from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

    def invitee(party_id, name):
        return InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=party_id,
                                                                           display_name=name)))

    # create: two targets make a group call
    call = await client.communications.calls.post(Call(
        callback_uri=receiver.url + "/api/group",
        targets=[invitee(BOB_ID, "Bob Interop"), invitee(CAROL_ID, "Carol Interop")],
        requested_modalities=[Modality.Audio],
        media_config=ServiceHostedMediaConfig(),
        tenant_id=TENANT_ID,
    ))
    if not c.ok("group create: the SDK returned a Call", isinstance(call, Call), repr(call)):
        return
    call_id, me = call.id, call.my_participant_id
    print("created group call %s (state %s, myParticipantId %s, chatInfo.threadId %r)"
          % (call_id, enum_value(call.state), me, getattr(call.chat_info, "thread_id", None)),
          flush=True)
    c.ok("group create: state is establishing", call.state == CallState.Establishing,
         enum_value(call.state))
    c.ok("group create: myParticipantId is set", bool(me), me)
    c.ok("group create: two targets echoed", len(call.targets or []) == 2, call.targets)
    c.ok("group create: chatInfo parsed as ChatInfo with a threadId",
         isinstance(call.chat_info, ChatInfo) and bool(call.chat_info.thread_id), call.chat_info)
    if not (call_id and me):
        return
    participants = client.communications.calls.by_call_id(call_id).participants

    advance(c, server, "group")
    got = await client.communications.calls.by_call_id(call_id).get()
    c.ok("group get: state is established",
         got is not None and got.state == CallState.Established,
         enum_value(got.state) if got is not None else None)

    # participants.get(): the bot and both targets
    roster = await eventually(participants.get, lambda r: len(roster_ids(r)) >= 3)
    check_roster(c, "group participants.get", roster, me,
                 [BOB_ID.lower(), CAROL_ID.lower()])
    by_user = {v: k for k, v in roster_ids(roster).items()}
    bob_pid, carol_pid = by_user.get(BOB_ID.lower()), by_user.get(CAROL_ID.lower())

    # participants.by_participant_id(x).get()
    if bob_pid:
        bob = await participants.by_participant_id(bob_pid).get()
        c.ok("group participant get: the SDK returned a Participant",
             isinstance(bob, Participant), repr(bob))
        c.ok("group participant get: same id and identity",
             isinstance(bob, Participant) and bob.id == bob_pid
             and identity_id(bob, "user") == BOB_ID.lower(), bob)
        c.ok("group participant get: not muted yet",
             isinstance(bob, Participant) and bob.is_muted is False, getattr(bob, "is_muted", None))
    unknown_pid = str(uuid.uuid4())
    await expect_odata_error(c, "group participant get unknown id",
                             participants.by_participant_id(unknown_pid).get, 404)

    # participants.invite.post(): Dave joins; the operation runs, then completes
    headers = HeadersInspectionHandlerOption(inspect_request_headers=False)
    config = RequestConfiguration(options=[headers])
    op = await participants.invite.post(InvitePostRequestBody(
        participants=[invitee(DAVE_ID, "Dave Interop")], client_context="interop-invite-1"),
        request_configuration=config)
    location = next(iter(headers.response_headers.get("location") or []), "")
    print("invite: operation %r status %r Location %r" % (getattr(op, "id", None),
          enum_value(getattr(op, "status", None)), location), flush=True)
    if c.ok("group invite: the SDK returned an InviteParticipantsOperation",
            isinstance(op, InviteParticipantsOperation), repr(op)):
        c.ok("group invite: status Running", op.status == OperationStatus.Running,
             enum_value(op.status))
        c.ok("group invite: clientContext echoed", op.client_context == "interop-invite-1",
             op.client_context)
        c.ok("group invite: id is set", bool(op.id), op.id)
        invited = [i for i in op.participants or [] if isinstance(i, InvitationParticipantInfo)]
        c.ok("group invite: participants parsed as InvitationParticipantInfo (Dave)",
             len(invited) == 1 and str(getattr(getattr(invited[0].identity, "user", None), "id",
                                                "")).lower() == DAVE_ID.lower(),
             op.participants)
        c.ok("group invite: Location names the operation",
             bool(op.id) and location.lower().endswith(
                 ("/communications/calls/%s/operations/%s" % (call_id, op.id)).lower()),
             location)
        advance(c, server, "group invite")
        op_url = "/communications/calls/%s/operations/%s" % (call_id, op.id)
        end = time.time() + 5
        while time.time() < end and not receiver.notes_on(op_url):
            await asyncio.sleep(0.05)
        done = [n for n in receiver.notes_on(op_url)
                if str(n.get("changeType")).lower() == "deleted"]
        status = str(((done or [{}])[-1].get("resourceData") or {}).get("status")).lower()
        c.ok("group invite: deleted notification on the operation says completed",
             status == "completed", receiver.notes_on(op_url))
        roster = await eventually(participants.get, lambda r: len(roster_ids(r)) >= 4)
        check_roster(c, "group participants.get after invite", roster, me,
                     [BOB_ID.lower(), CAROL_ID.lower(), DAVE_ID.lower()])

    # participants.by_participant_id(x).mute.post()
    if bob_pid:
        mute = await participants.by_participant_id(bob_pid).mute.post(
            MutePostRequestBody(client_context="interop-mute-1"))
        if c.ok("group mute: the SDK returned a MuteParticipantOperation",
                isinstance(mute, MuteParticipantOperation), repr(mute)):
            c.ok("group mute: status Completed", mute.status == OperationStatus.Completed,
                 enum_value(mute.status))
            c.ok("group mute: clientContext echoed", mute.client_context == "interop-mute-1",
                 mute.client_context)
        bob = await eventually(participants.by_participant_id(bob_pid).get,
                               lambda p: getattr(p, "is_muted", None) is True)
        c.ok("group mute: the participant reads isMuted true", getattr(bob, "is_muted", None),
             getattr(bob, "is_muted", None))
    await expect_odata_error(
        c, "group mute unknown id",
        lambda: participants.by_participant_id(unknown_pid).mute.post(
            MutePostRequestBody(client_context="interop-mute-2")), 404)

    # participants.by_participant_id(x).delete()
    if carol_pid:
        try:
            await participants.by_participant_id(carol_pid).delete()
            c.ok("group remove participant: no exception", True)
        except Exception as e:  # noqa: BLE001
            c.ok("group remove participant: no exception", False,
                 "%s: %s" % (type(e).__name__, e))
        roster = await eventually(participants.get,
                                  lambda r: carol_pid not in roster_ids(r))
        c.ok("group remove participant: no longer listed",
             carol_pid not in roster_ids(roster) and bob_pid in roster_ids(roster),
             roster_ids(roster))
    await expect_odata_error(c, "group remove unknown id",
                             participants.by_participant_id(unknown_pid).delete, 404)

    # the bot leaves
    try:
        await client.communications.calls.by_call_id(call_id).delete()
        c.ok("group delete: no exception", True)
    except Exception as e:  # noqa: BLE001
        c.ok("group delete: no exception", False, "%s: %s" % (type(e).__name__, e))


async def meeting_join_checks(c, client, server, receiver):
    """Joining a configured meeting by joinMeetingIdMeetingInfo; a wrong passcode and an unknown
    meeting id are ODataErrors raised before any call exists."""
    from msgraph.generated.models.call import Call
    from msgraph.generated.models.call_state import CallState
    from msgraph.generated.models.chat_info import ChatInfo
    from msgraph.generated.models.join_meeting_id_meeting_info import JoinMeetingIdMeetingInfo
    from msgraph.generated.models.modality import Modality
    from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig

    def join(meeting_id, passcode):
        # As the "join a meeting with joinMeetingId" example: no chatInfo, no targets.
        return client.communications.calls.post(Call(
            callback_uri=receiver.url + "/api/meeting",
            requested_modalities=[Modality.Audio],
            media_config=ServiceHostedMediaConfig(),
            meeting_info=JoinMeetingIdMeetingInfo(join_meeting_id=meeting_id, passcode=passcode),
            tenant_id=TENANT_ID,
        ))

    await expect_odata_error(c, "meeting join wrong passcode",
                             lambda: join(MEETING_ID, "not-the-passcode"), 403)
    await expect_odata_error(c, "meeting join unknown joinMeetingId",
                             lambda: join("9999999999", MEETING_PASSCODE), 404)

    call = await join(MEETING_ID, MEETING_PASSCODE)
    if not c.ok("meeting join: the SDK returned a Call", isinstance(call, Call), repr(call)):
        return
    call_id, me = call.id, call.my_participant_id
    print("joined meeting: call %s (state %s, myParticipantId %s, chatInfo %r)"
          % (call_id, enum_value(call.state), me, call.chat_info), flush=True)
    c.ok("meeting join: state is establishing", call.state == CallState.Establishing,
         enum_value(call.state))
    c.ok("meeting join: meetingInfo parsed as JoinMeetingIdMeetingInfo with our id",
         isinstance(call.meeting_info, JoinMeetingIdMeetingInfo)
         and call.meeting_info.join_meeting_id == MEETING_ID, call.meeting_info)
    c.ok("meeting join: chatInfo parsed as ChatInfo with a threadId",
         isinstance(call.chat_info, ChatInfo) and bool(call.chat_info.thread_id), call.chat_info)
    if not (call_id and me):
        return

    advance(c, server, "meeting")
    got = await client.communications.calls.by_call_id(call_id).get()
    c.ok("meeting get: state is established",
         got is not None and got.state == CallState.Established,
         enum_value(got.state) if got is not None else None)
    c.ok("meeting get: meetingInfo still a JoinMeetingIdMeetingInfo",
         got is not None and isinstance(got.meeting_info, JoinMeetingIdMeetingInfo),
         getattr(got, "meeting_info", None))

    participants = client.communications.calls.by_call_id(call_id).participants
    roster = await eventually(participants.get, lambda r: len(roster_ids(r)) >= 3)
    check_roster(c, "meeting participants.get", roster, me, [ERIN_ID.lower(), FRANK_ID.lower()])

    try:
        await client.communications.calls.by_call_id(call_id).delete()
        c.ok("meeting leave: no exception", True)
    except Exception as e:  # noqa: BLE001
        c.ok("meeting leave: no exception", False, "%s: %s" % (type(e).__name__, e))




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
        asyncio.run(asyncio.wait_for(scenario(c, server, receiver), timeout=300))
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
