"""Alertmanager API v2: silences."""

from __future__ import annotations

from typing import Any

from daemon.clients.http import JsonHttpClient
from daemon.errors import PermanentError


class AlertmanagerClient:
    def __init__(self, http: JsonHttpClient) -> None:
        self.http = http

    async def close(self) -> None:
        await self.http.close()

    async def create_silence(self, silence: dict[str, Any]) -> str:
        body = await self.http.request("POST", "/api/v2/silences", json=silence)
        if not isinstance(body, dict) or not body.get("silenceID"):
            raise PermanentError(f"alertmanager gave no silenceID: {str(body)[:200]}")
        return str(body["silenceID"])

    async def silences(self) -> list[dict[str, Any]]:
        body = await self.http.request("GET", "/api/v2/silences")
        return list(body) if isinstance(body, list) else []

    async def expire_silence(self, silence_id: str) -> bool:
        """Expire a silence; False if Alertmanager no longer knows it (already gone counts as done)."""
        try:
            await self.http.request("DELETE", f"/api/v2/silence/{silence_id}")
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True
