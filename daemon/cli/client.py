"""A small synchronous client of runbookd's HTTP API for the CLI (RUNBOOKD_SERVER, RUNBOOKD_TOKEN)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import IO, Any

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ClientError(Exception):
    """The request failed; the message says why (server's own error text where there is one)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib's handler would send the token (a header added with add_header)
    to whatever URL the Location names, and turn a POST into a GET. A 3xx becomes an HTTPError instead."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or os.environ.get("RUNBOOKD_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.token = token if token is not None else os.environ.get("RUNBOOKD_TOKEN")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.server.startswith(("http://", "https://")):
            raise ClientError(f"--server must be an http(s) URL, not {self.server!r}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310 - scheme checked
        req.add_header("Content-Type", "application/json")
        req.add_header("X-Runbookd-Client", "cli")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                location = exc.headers.get("Location") if exc.headers else None
                raise ClientError(
                    f"{exc.code} from {method} {path}: redirects are not followed"
                    f" (Location: {location or 'none given'}); check --server / RUNBOOKD_SERVER"
                ) from None
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            hint = " (set RUNBOOKD_TOKEN)" if exc.code == 401 and not self.token else ""
            raise ClientError(f"{exc.code}: {message}{hint}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach runbookd at {self.server}: {reason}") from None

    def get(self, path: str, **query: str | None) -> Any:
        q = {k: v for k, v in query.items() if v is not None}
        return self.request("GET", path + ("?" + urllib.parse.urlencode(q) if q else ""))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})


def quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
