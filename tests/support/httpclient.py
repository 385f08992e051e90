"""Tiny synchronous HTTP client for tests (stdlib only, never uses proxies, never raises on HTTP status).

For async tests that also serve something on their own event loop, call these through
``asyncio.to_thread`` (or use the ``*_async`` helpers of the server classes) so the loop stays free.
"""

from __future__ import annotations

import json as _json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# An opener with an empty ProxyHandler: HTTP(S)_PROXY in the environment is ignored, traffic stays on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={self.text[:500]!r})"


def request(
    method: str,
    url: str,
    *,
    json: Any = None,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> Response:
    """Send one request; return the response whatever its status. Connection errors raise ``OSError``.

    ``params`` may be a mapping or a list of pairs (for repeated keys such as ``filter``)."""
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"tests only talk to loopback, not {url!r}")
    if params:
        url = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
    hdrs = dict(headers or {})
    body: bytes | None
    if json is not None:
        body = _json.dumps(json).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(data, str):
        body = data.encode()
    else:
        body = data
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=hdrs, method=method.upper())
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.read(), dict(resp.headers.items()))
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, e.read(), dict(e.headers.items()) if e.headers else {})


def get(url: str, **kw: Any) -> Response:
    return request("GET", url, **kw)


def post(url: str, **kw: Any) -> Response:
    return request("POST", url, **kw)


def delete(url: str, **kw: Any) -> Response:
    return request("DELETE", url, **kw)
