"""JSON over HTTP with a timeout on every call and errors split by what to do next."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from pydantic import SecretStr

from daemon.errors import PermanentError, TemporaryError


class JsonHttpClient:
    """One base URL, one session, optional bearer token. ``request`` returns the decoded JSON body."""

    def __init__(self, base_url: str, *, timeout: float, token: SecretStr | None = None, name: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token = token
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "runbookd"}
            if self._token is not None:
                headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
    ) -> Any:
        url = self.url(path)
        try:
            async with self._get_session().request(method, url, params=params, json=json, data=data) as resp:
                text = await resp.text()
                if resp.status == 429 or resp.status >= 500:
                    retry = resp.headers.get("Retry-After")
                    raise TemporaryError(
                        f"{self.name} answered {resp.status} to {method} {path}: {text[:300]}",
                        retry_after=float(retry) if retry and retry.isdigit() else None,
                        status=resp.status,
                    )
                if resp.status >= 400:
                    raise PermanentError(
                        f"{self.name} answered {resp.status} to {method} {path}: {text[:300]}",
                        status=resp.status,
                    )
                if not text:
                    return None
                try:
                    return await resp.json(content_type=None)
                except ValueError as exc:
                    raise PermanentError(f"{self.name} sent invalid JSON for {method} {path}") from exc
        except TimeoutError as exc:
            raise TemporaryError(f"{self.name} did not answer {method} {path} in time") from exc
        except aiohttp.ClientError as exc:
            raise TemporaryError(f"{self.name} unreachable for {method} {path}: {exc}") from exc
        except asyncio.CancelledError:
            raise
