"""A bot's callback endpoint for tests: checks each notification's JWT as a real bot must,
records what arrives, and lets a test wait for a call state or an operation's end."""
from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jwt

from ._http import request
from .prompts import silent_wav
from .server import Switchboard

METADATA_PATH = "/v1/.well-known/OpenIdConfiguration"
SEQUENCE_HEADER = "Switchboard-Notification-Sequence"
CLOCK_SKEW_SECONDS = 300
_RESOURCE = re.compile(r"/calls/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?")
_KEYS = {"star": "*", "pound": "#", "a": "A", "b": "B", "c": "C", "d": "D",
         **{"tone%d" % i: str(i) for i in range(10)}}


@dataclass(frozen=True)
class Notification:
    """One notification of a `commsNotifications` POST, as the receiver got it."""

    change_type: str
    """`created`, `updated` or `deleted`."""
    resource_url: str
    """`/communications/calls/{id}`, `.../operations/{opId}` or `.../participants`."""
    resource_data: Any
    """The call, the operation, or (a roster) the list of participants."""
    sequence: Optional[int]
    """The call's own number for it, from the `Switchboard-Notification-Sequence` header."""
    path: str
    """The path it was POSTed to."""
    headers: Mapping[str, str] = field(repr=False)
    """The headers of the POST that carried it (names lower-case)."""
    raw: Mapping[str, Any] = field(repr=False)
    """The notification object as POSTed."""

    @property
    def call_id(self) -> str:
        """The id of the call it is about, lower case."""
        return self._resource()[0]

    @property
    def kind(self) -> str:
        """What it is about: `call`, `operation` or `participants` (the roster)."""
        segment = self._resource()[1]
        return {"": "call", "operations": "operation"}.get(segment, segment)

    @property
    def operation_id(self) -> Optional[str]:
        """The operation's id, for a notification about an operation."""
        return self._resource()[2] if self.kind == "operation" else None

    @property
    def state(self) -> Optional[str]:
        """The call's state (`establishing`, `established`, `terminated`, ...), for a
        notification about the call itself."""
        state = self._data("state") if self.kind == "call" else None
        return str(state) if state is not None else None

    @property
    def status(self) -> Optional[str]:
        """The operation's status (`completed`, `failed`), for a notification about one."""
        status = self._data("status") if self.operation_id else None
        return str(status) if status is not None else None

    @property
    def result_info(self) -> Optional[Dict[str, Any]]:
        """`resultInfo` (code, subcode, message) of the call or operation, if any."""
        info = self._data("resultInfo")
        return info if isinstance(info, dict) else None

    @property
    def tone(self) -> Optional[str]:
        """The tone of a key the caller pressed (`tone1`, `pound`, ...), for a tone
        notification."""
        info = self._data("toneInfo")
        return str(info["tone"]) if isinstance(info, dict) and "tone" in info else None

    @property
    def client_context(self) -> Optional[str]:
        """The `clientContext` of the operation or call, if any."""
        context = self._data("clientContext")
        return str(context) if context is not None else None

    def _resource(self) -> Tuple[str, str, Optional[str]]:
        """The call id, the segment after it and the id after that, lower case."""
        match = _RESOURCE.search(self.resource_url)
        if not match:
            return "", "", None
        call_id, segment, sub_id = match.groups()
        return call_id.lower(), (segment or "").lower(), sub_id.lower() if sub_id else None

    def _data(self, name: str) -> Any:
        return self.resource_data.get(name) if isinstance(self.resource_data, dict) else None

    def describe(self) -> str:
        """A short line: the change, the resource and what changed."""
        what = [self.change_type, self.resource_url]
        for label, value in (("state", self.state), ("status", self.status),
                             ("tone", self.tone), ("resultInfo", self.result_info)):
            if value is not None:
                what.append("%s=%s" % (label, value))
        if self.sequence is not None:
            what.append("(sequence %d)" % self.sequence)
        return " ".join(str(part) for part in what)


@dataclass(frozen=True)
class InvalidNotification:
    """A POST the receiver refused (401) because its token was not valid."""

    reason: str
    path: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class NotificationTimeout(AssertionError):
    """No notification matched within the time given to `Receiver.wait_for`."""


class ReceiverProblems(AssertionError):
    """The receiver refused notifications with invalid tokens, or its handler failed."""


class InvalidNotificationToken(Exception):
    """A notification's bearer token is not valid; the message says why."""


class NotificationTokenValidator:
    """Checks the bearer token of a notification POST as a real bot must: RS256, signed by a key
    of the signing metadata's `jwks_uri`, the metadata's issuer (or `issuer`), the app id as
    audience, and a lifetime that holds now (give or take five minutes of clock skew)."""

    def __init__(self, metadata_url: str, audience: str, *, issuer: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None):
        self.metadata_url = metadata_url
        self.audience = audience
        self.ssl_context = ssl_context
        metadata = self._get_json(metadata_url)
        self.issuer = issuer or metadata["issuer"]
        self.jwks_uri = metadata["jwks_uri"]
        self.keys: Dict[str, jwt.PyJWK] = {}
        self._lock = threading.Lock()
        self._load_keys()

    @classmethod
    def for_switchboard(cls, switchboard: Switchboard, audience: Optional[str] = None,
                        issuer: Optional[str] = None) -> "NotificationTokenValidator":
        """A validator that reads the server's metadata over HTTPS, as a bot does; the audience
        is the app id unless given."""
        return cls(switchboard.https_url + METADATA_PATH, audience or switchboard.app_id,
                   issuer=issuer, ssl_context=switchboard.ssl_context())

    def validate(self, authorization: Optional[str]) -> Dict[str, Any]:
        """Returns the claims of the token in an `Authorization` header; raises
        InvalidNotificationToken saying why it is not valid."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise InvalidNotificationToken("no bearer token in the Authorization header")
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(header.get("kid"), header.get("x5t"))
            return jwt.decode(token, key.key, algorithms=["RS256"], audience=self.audience,
                              issuer=self.issuer, leeway=CLOCK_SKEW_SECONDS,
                              options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as error:
            raise InvalidNotificationToken("%s: %s" % (type(error).__name__, error)) from None

    def _key(self, kid: Optional[str], x5t: Optional[str]) -> jwt.PyJWK:
        with self._lock:
            for attempt in range(2):
                for name in (kid, x5t):
                    if name and name in self.keys:
                        return self.keys[name]
                if attempt == 0:
                    self._reload_keys()
        raise InvalidNotificationToken(
            "no key with kid %r or x5t %r in the signing metadata's JWKS" % (kid, x5t))

    def _reload_keys(self) -> None:
        """Reads the key set again, for a key rotated in since the last read."""
        try:
            self._load_keys()
        except RuntimeError as error:
            raise InvalidNotificationToken("its key is unknown and %s" % error) from None

    def _load_keys(self) -> None:
        keys: Dict[str, jwt.PyJWK] = {}
        for entry in self._get_json(self.jwks_uri).get("keys", []):
            key = jwt.PyJWK(entry)
            for name in (entry.get("kid"), entry.get("x5t")):
                if name:
                    keys[name] = key
        self.keys = keys

    def _get_json(self, url: str) -> Any:
        try:
            answer = request("GET", url, context=self.ssl_context, timeout=10)
        except OSError as error:
            raise RuntimeError("cannot read %s: %s; is the server running, and does the TLS "
                               "context trust its authority (switchboard.ca_file)?"
                               % (url, error)) from None
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise RuntimeError("GET %s answered %d: %s" % (url, answer.status, answer.body))
        return answer.body


Handler = Callable[[Notification], None]


class Receiver:
    """An HTTP server on 127.0.0.1 that stands in for a bot's callback URL (`url`).

    Every POST's token is checked as a real bot must; one that fails is answered 401 and kept in
    `invalid`. Valid notifications are recorded in order, passed to `on_notification` (or
    forwarded to `forward_to`), and answered 202, or as `fail_next` says. It also serves WAV
    prompts. `close()` stops it.

    `on_notification` is the bot under test: called with each valid notification, in order,
    before the POST is answered; if it raises, the POST is answered 500 and the error kept in
    `errors`. `forward_to` is instead a bot's own callback URL: valid POSTs are passed on to it
    and its status answered. Tokens are checked for the audience `app_id` (default: the
    switchboard's app) and `issuer` (default: the one the signing metadata names).
    """

    def __init__(self, switchboard: Switchboard, *, app_id: Optional[str] = None,
                 issuer: Optional[str] = None, path: str = "/api/calls",
                 on_notification: Optional[Handler] = None, forward_to: Optional[str] = None):
        self.on_notification = on_notification
        self.forward_to = forward_to
        self.invalid: List[InvalidNotification] = []
        self.errors: List[str] = []
        self.validator = NotificationTokenValidator.for_switchboard(switchboard, app_id, issuer)
        self._notifications: List[Notification] = []
        self._failures: List[int] = []
        self._files: Dict[str, bytes] = {}
        self._changed = threading.Condition()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self.origin = "http://127.0.0.1:%d" % self._httpd.server_address[1]
        self.url = self.origin + path
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        """Stops listening."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- steering -------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answers the next `count` valid POSTs with `status` instead of taking them, as a bot
        that is down would; Switchboard retries them later on the call clock."""
        with self._changed:
            self._failures.extend([status] * count)

    def prompt(self, name: str, seconds: float) -> str:
        """Serves `seconds` of silence as a WAV file at `/prompts/{name}`; returns its URL."""
        self._files["/prompts/" + name] = silent_wav(seconds)
        return self.origin + "/prompts/" + name

    def clear(self) -> None:
        """Forgets what was received, refused and raised, and any `fail_next`. Prompts stay."""
        with self._changed:
            self._notifications.clear()
            self._failures.clear()
            self.invalid.clear()
            self.errors.clear()

    # --- what arrived ---------------------------------------------------------------------

    def notifications(self, call_id: Optional[str] = None) -> List[Notification]:
        """The valid notifications received, in order; only those about `call_id` if given.
        A notification delivered twice (a redelivery) is in the list twice."""
        with self._changed:
            return [n for n in self._notifications if _same_call(n, call_id)]

    def states(self, call_id: str) -> List[str]:
        """The states the call went through, in order, from its call notifications (a state is
        listed again only after another one)."""
        states: List[str] = []
        for n in self.notifications(call_id):
            if n.state and (not states or states[-1] != n.state):
                states.append(n.state)
        return states

    def tones(self, call_id: str) -> str:
        """The keys the caller pressed, as its tone notifications said: for example `12#`."""
        return "".join(_KEYS.get(n.tone, "?") for n in self.notifications(call_id) if n.tone)

    def wait_for(self, call_id: Optional[str] = None, *, state: Optional[str] = None,
                 operation: Optional[str] = None, change_type: Optional[str] = None,
                 tone: Optional[str] = None, match: Optional[Callable[[Notification], bool]] = None,
                 since: Optional[int] = None, timeout: float = 5.0) -> Notification:
        """Returns the first notification about `call_id` (any call if None), received already
        or within `timeout` seconds, that meets every condition given:

        - `state`: a call notification with this state (`established`, `terminated`, ...);
        - `operation`: a finished (`completed` or `failed`) operation with this id or
          `clientContext`;
        - `change_type`: `created`, `updated` or `deleted`;
        - `tone`: a tone notification with this tone (`tone1`, `pound`, ...);
        - `match`: a function of the notification that returns True;
        - `since`: only notifications with a greater `sequence`.

        Raises NotificationTimeout, listing what was received, if none does."""
        conditions = _Conditions(state, operation, change_type, tone, match, since)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for n in self._notifications:
                    if _same_call(n, call_id) and conditions.met_by(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotificationTimeout(self._timeout_message(call_id, timeout, conditions))
                self._changed.wait(left)

    def assert_clean(self) -> None:
        """Raises ReceiverProblems if a notification had an invalid token, or the handler (or
        the bot forwarded to) failed. The `bot_receiver` fixture calls it after each test."""
        problems = ["invalid token (%s) on a POST to %s" % (i.reason, i.path)
                    for i in self.invalid] + self.errors
        if problems:
            raise ReceiverProblems("the bot's receiver had %d problem(s):\n%s"
                                   % (len(problems), "\n".join(problems)))

    # --- internals ------------------------------------------------------------------------

    def _receive(self, path: str, headers: Mapping[str, str], body: bytes) -> int:
        """Takes one POST; returns the status to answer."""
        try:
            self.validator.validate(headers.get("authorization"))
        except InvalidNotificationToken as error:
            with self._changed:
                self.invalid.append(InvalidNotification(str(error), path, headers, body))
                self._changed.notify_all()
            return 401
        with self._changed:
            if self._failures:
                return self._failures.pop(0)
        notifications = _parse(path, headers, body)
        with self._changed:
            self._notifications.extend(notifications)
            self._changed.notify_all()
        if self.forward_to:
            return self._forward(self.forward_to, headers, body)
        return self._handle(notifications)

    def _handle(self, notifications: List[Notification]) -> int:
        handler = self.on_notification
        for n in notifications:
            try:
                if handler is not None:
                    handler(n)
            except Exception:  # noqa: BLE001 - reported by assert_clean()
                self.errors.append("on_notification raised on %s:\n%s"
                                   % (n.describe(), traceback.format_exc()))
                return 500
        return 202

    def _forward(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        kept = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
        try:
            return request("POST", url, data=body, headers=kept).status
        except OSError as error:
            self.errors.append("forwarding to %s failed: %s" % (url, error))
            return 502

    def _timeout_message(self, call_id: Optional[str], timeout: float,
                         conditions: "_Conditions") -> str:
        wanted = conditions.describe()
        seen = [n.describe() for n in self._notifications if _same_call(n, call_id)]
        lines = ["no notification%s%s within %.1f s." % (
            " about call %s" % call_id if call_id else "",
            " with " + wanted if wanted else "", timeout)]
        lines.append("Received%s: %s" % (" for that call" if call_id else "",
                                         "".join("\n  " + line for line in seen[-30:])
                                         or "nothing"))
        if self.invalid:
            lines.append("%d POST(s) refused for an invalid token: %s"
                         % (len(self.invalid), self.invalid[-1].reason))
        lines.append("With the virtual clock, things happen only when the test moves it: "
                     "switchboard.advance(seconds).")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Conditions:
    """What `Receiver.wait_for` waits for; None means any."""

    state: Optional[str]
    operation: Optional[str]
    change_type: Optional[str]
    tone: Optional[str]
    match: Optional[Callable[[Notification], bool]]
    since: Optional[int]

    def met_by(self, n: Notification) -> bool:
        if self.since is not None and (n.sequence is None or n.sequence <= self.since):
            return False
        if self.state is not None and (n.state or "").lower() != self.state.lower():
            return False
        if self.operation is not None and not (
                n.status in ("completed", "failed")
                and self.operation.lower() in (n.operation_id, (n.client_context or "").lower())):
            return False
        if self.change_type is not None and n.change_type.lower() != self.change_type.lower():
            return False
        if self.tone is not None and n.tone != self.tone:
            return False
        return self.match is None or self.match(n)

    def describe(self) -> str:
        return ", ".join("%s=%r" % (name, value) for name, value in vars(self).items()
                         if value is not None)


def _parse(path: str, headers: Mapping[str, str], body: bytes) -> List[Notification]:
    envelope = json.loads(body)
    listed = headers.get(SEQUENCE_HEADER.lower()) or ""
    sequences = [int(s) for s in listed.split(",") if s.strip()]
    out = []
    for i, item in enumerate(envelope.get("value", [])):
        out.append(Notification(
            change_type=str(item.get("changeType", "")), resource_url=item.get("resourceUrl", ""),
            resource_data=item.get("resourceData"),
            sequence=sequences[i] if i < len(sequences) else None,
            path=path, headers=headers, raw=item))
    return out


def _same_call(n: Notification, call_id: Optional[str]) -> bool:
    if call_id is None:
        return True
    return n.call_id.replace("-", "") == call_id.lower().replace("-", "")


def _handler_class(receiver: Receiver) -> type:
    class _Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = receiver._receive(self.path, headers, body)
            self._answer(status, b"")

        def do_GET(self) -> None:  # noqa: N802
            data = receiver._files.get(self.path.split("?")[0])
            if data is None:
                self._answer(404, b"")
            else:
                self._answer(200, data, "audio/wav")

        def _answer(self, status: int, data: bytes, content_type: Optional[str] = None) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return _Handler
