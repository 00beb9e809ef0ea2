"""Small JSON-over-HTTP helpers on the standard library."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Optional

# Never send test traffic through a proxy from the environment: every request goes to this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class GraphResponse:
    """An HTTP answer (of a Graph request, or any other): its status, its headers (names lower
    case) and its body: parsed JSON, text, or None when empty."""

    status: int
    headers: Mapping[str, str]
    body: Any


def request(method: str, url: str, json_body: Any = None, *, data: Optional[bytes] = None,
            headers: Optional[Mapping[str, str]] = None, timeout: float = 30.0,
            context: Optional[ssl.SSLContext] = None) -> GraphResponse:
    """Sends one request and returns the answer, whatever its status."""
    all_headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    opener = _OPENER if context is None else urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout) as answer:
            return _response(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        return _response(error.code, error.headers, error.read())


def _response(status: int, headers: Any, raw: bytes) -> GraphResponse:
    names = {k.lower(): v for k, v in headers.items()}
    body: Any = raw.decode("utf-8", "replace") if raw else None
    if raw and "json" in names.get("content-type", ""):
        body = json.loads(raw)
    return GraphResponse(status, names, body)
