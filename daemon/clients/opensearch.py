"""OpenSearch's REST API over aiohttp: basic auth or a bearer token, TLS like ``s3:``, a timeout on every
attempt, retries of 429/502/503/504 and connection failures with backoff, and OpenSearch's JSON error
bodies wrapped into runbookd's errors, split by what to do next.

Only the calls the ``opensearch.*`` actions make are here. Names reaching a path are validated by the
actions (daemon/actions/opensearch/names.py) to a set of characters that needs no escaping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from daemon.config import OpenSearchConfig
from daemon.errors import PermanentError, TemporaryError

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Answers worth the same request again. 500 is not among them: OpenSearch answers 500 for failures of the
request itself (a repository that cannot be verified), which a retry does not fix."""


class OpenSearchTemporaryError(TemporaryError):
    """Timeout, connection refused, throttled (429), 502/503/504: the same request may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        type_: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, status=status)
        self.kind = kind
        self.type = type_


class OpenSearchPermanentError(PermanentError):
    """Bad credentials (401), no permission (403), not found (404), refused request (400), 500, TLS:
    retrying will not help; ``kind`` and ``type`` (OpenSearch's error type) say what happened."""

    def __init__(
        self, message: str, *, kind: str, type_: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.kind = kind
        self.type = type_


OpenSearchError = OpenSearchTemporaryError | OpenSearchPermanentError

_KINDS = {401: "credentials", 403: "forbidden", 404: "not_found", 409: "conflict", 429: "throttled"}


def error_type_and_reason(text: str) -> tuple[str | None, str]:
    """OpenSearch's error body ``{"error": {"type", "reason", "root_cause"}, "status"}`` (or a bare
    string, as the security plugin's 401 sends) -> (type, reason)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None, text.strip()[:300]
    if not isinstance(doc, dict):
        return None, text.strip()[:300]
    err = doc.get("error")
    if isinstance(err, dict):
        return (str(err["type"]) if err.get("type") else None), str(err.get("reason") or "")[:300]
    if isinstance(err, str):
        return None, err[:300]
    return None, text.strip()[:300]


def classify(status: int, text: str, what: str, retry_after: float | None = None) -> OpenSearchError:
    type_, reason = error_type_and_reason(text)
    detail = f"{type_}: {reason}" if type_ else reason
    message = f"OpenSearch {what}: HTTP {status}" + (f" {detail}" if detail else "")
    if status == 401:
        message += " (check opensearch.username/password or opensearch.token)"
    if status in RETRY_STATUSES:
        kind = "throttled" if status == 429 else "unavailable"
        if type_ == "concurrent_snapshot_execution_exception":
            kind = "concurrent_snapshots"
        return OpenSearchTemporaryError(
            message, kind=kind, type_=type_, status=status, retry_after=retry_after
        )
    kind = _KINDS.get(status, "server_error" if status >= 500 else "invalid_request")
    if type_ == "snapshot_in_progress_exception":
        kind = "snapshot_in_progress"
    return OpenSearchPermanentError(message, kind=kind, type_=type_, status=status)


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    """Seconds before the second attempt; doubled for each further one (with jitter)."""
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        d: float = min(self.base * 2 ** (attempt - 1), self.max_delay)
        return d * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


class OpenSearchClient:
    """One cluster, one session. ``request`` returns the decoded JSON body or raises an OpenSearchError."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        username: SecretStr | None = None,
        password: SecretStr | None = None,
        token: SecretStr | None = None,
        ssl_context: ssl.SSLContext | bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._authorization: SecretStr | None = None
        if username is not None and password is not None:
            pair = f"{username.get_secret_value()}:{password.get_secret_value()}".encode()
            self._authorization = SecretStr("Basic " + base64.b64encode(pair).decode())
        elif token is not None:
            self._authorization = SecretStr(f"Bearer {token.get_secret_value()}")
        self._ssl = ssl_context
        self._backoff = backoff or Backoff()
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "runbookd", "Accept": "application/json"}
            if self._authorization is not None:
                headers["Authorization"] = self._authorization.get_secret_value()
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def describe(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        """A request as dry-run records it (no credentials: they are headers, never part of the URL)."""
        out: dict[str, Any] = {"method": method, "url": f"{self.url}/{path.lstrip('/')}"}
        if params:
            out["params"] = dict(params)
        if body is not None:
            out["body"] = body
        return out

    async def _once(self, method: str, path: str, params: dict[str, str] | None, body: Any) -> Any:
        what = f"{method} /{path.lstrip('/')}"
        url = f"{self.url}/{path.lstrip('/')}"
        try:
            async with self._get_session().request(method, url, params=params, json=body) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise classify(resp.status, text, what, _retry_after(resp.headers.get("Retry-After")))
                if not text:
                    return None
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise OpenSearchPermanentError(
                        f"OpenSearch {what}: the answer is not JSON", kind="invalid_answer"
                    ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise OpenSearchPermanentError(
                f"OpenSearch {what}: TLS certificate of {self.url} not trusted ({exc.certificate_error}); set "
                "opensearch.ca_bundle to the CA of its certificate",
                kind="tls",
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise OpenSearchPermanentError(
                f"OpenSearch {what}: TLS with {self.url} failed", kind="tls"
            ) from exc
        except TimeoutError as exc:
            raise OpenSearchTemporaryError(
                f"OpenSearch {what}: {self.url} did not answer in time", kind="timeout"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise OpenSearchTemporaryError(
                f"OpenSearch {what}: cannot connect to {self.url} ({type(exc).__name__})", kind="unreachable"
            ) from exc
        except aiohttp.ClientError as exc:  # a broken answer (payload, protocol): the next attempt may do
            raise OpenSearchTemporaryError(
                f"OpenSearch {what}: the answer from {self.url} broke off ({type(exc).__name__})",
                kind="connection",
            ) from exc

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        """One call with up to ``retries`` further attempts after a temporary failure."""
        attempt = 1
        while True:
            try:
                return await self._once(method, path, params, body)
            except OpenSearchTemporaryError as exc:
                if attempt > self.retries:
                    raise
                await asyncio.sleep(self._backoff.delay(attempt, exc.retry_after))
                attempt += 1

    # -- the calls the actions make -------------------------------------------------------------------

    async def cat_indices(self, pattern: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
        """``GET _cat/indices/{pattern}?format=json&h=...``: one row per index, every value a string.
        A wildcard pattern that matches nothing answers an empty list."""
        params = {"format": "json", "h": ",".join(columns), "bytes": "b", "expand_wildcards": "all"}
        rows = await self.request("GET", f"_cat/indices/{pattern}", params=params)
        return [r for r in rows or [] if isinstance(r, dict)]

    async def get_snapshots(self, repo: str, names: str = "_all") -> list[dict[str, Any]]:
        doc = await self.request("GET", f"_snapshot/{repo}/{names}")
        return [s for s in (doc or {}).get("snapshots") or [] if isinstance(s, dict)]

    async def get_snapshot(self, repo: str, name: str) -> dict[str, Any] | None:
        """One snapshot, or None when the repository has no snapshot of that name."""
        try:
            found = await self.get_snapshots(repo, name)
        except OpenSearchPermanentError as exc:
            if exc.type == "snapshot_missing_exception":
                return None
            raise
        return next((s for s in found if s.get("snapshot") == name), None)

    async def get_repository(self, repo: str) -> dict[str, Any] | None:
        try:
            doc = await self.request("GET", f"_snapshot/{repo}")
        except OpenSearchPermanentError as exc:
            if exc.type == "repository_missing_exception" or exc.kind == "not_found":
                return None
            raise
        found = (doc or {}).get(repo)
        return found if isinstance(found, dict) else None

    async def index_settings(self, index: str) -> dict[str, str]:
        """The index's settings, flat (``index.blocks.write``: "true")."""
        doc = await self.request("GET", f"{index}/_settings", params={"flat_settings": "true"})
        entry = (doc or {}).get(index) or {}
        settings = entry.get("settings") if isinstance(entry, dict) else None
        return {str(k): str(v) for k, v in (settings or {}).items()}

    async def data_streams(self) -> list[dict[str, Any]]:
        doc = await self.request("GET", "_data_stream")
        return [d for d in (doc or {}).get("data_streams") or [] if isinstance(d, dict)]

    async def aliases(self) -> dict[str, dict[str, Any]]:
        """``GET _alias``: index -> {alias: properties}."""
        doc = await self.request("GET", "_alias")
        out: dict[str, dict[str, Any]] = {}
        for index, entry in (doc or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("aliases"), dict):
                out[str(index)] = entry["aliases"]
        return out


def ssl_for(cfg: OpenSearchConfig) -> ssl.SSLContext | bool:
    if not cfg.url.startswith("https:"):
        return True
    if not cfg.verify_tls:
        return False
    ctx = ssl.create_default_context(cafile=str(cfg.ca_bundle) if cfg.ca_bundle else None)
    return ctx


def from_config(
    cfg: OpenSearchConfig,
    *,
    username: SecretStr | None,
    password: SecretStr | None,
    token: SecretStr | None,
) -> OpenSearchClient:
    return OpenSearchClient(
        cfg.url,
        timeout=cfg.timeout,
        retries=cfg.retries,
        username=username,
        password=password,
        token=token,
        ssl_context=ssl_for(cfg),
    )
