"""Prometheus (or Thanos Query) HTTP API: instant queries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from daemon.clients.http import JsonHttpClient
from daemon.errors import PermanentError


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float

    def as_dict(self) -> dict[str, Any]:
        v: Any = self.value if math.isfinite(self.value) else str(self.value)
        return {"labels": self.labels, "value": v}


class PrometheusClient:
    def __init__(self, http: JsonHttpClient) -> None:
        self.http = http

    async def close(self) -> None:
        await self.http.close()

    async def query(self, expr: str) -> list[Sample]:
        """An instant query. Vectors give one sample per series; a scalar gives one unlabelled sample."""
        body = await self.http.request("POST", "/api/v1/query", data={"query": expr})
        if not isinstance(body, dict) or body.get("status") != "success":
            raise PermanentError(f"prometheus rejected the query: {str(body)[:300]}")
        data = body.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector" and isinstance(result, list):
            return [Sample(labels=dict(r["metric"]), value=float(r["value"][1])) for r in result]
        if kind == "scalar" and isinstance(result, list):
            return [Sample(labels={}, value=float(result[1]))]
        raise PermanentError(f"prometheus answered a {kind} result; use an expression giving a vector")

    async def active_targets(self) -> list[dict[str, Any]]:
        """``GET /api/v1/targets?state=active``: the scrape targets with their health and last error."""
        body = await self.http.request("GET", "/api/v1/targets", params={"state": "active"})
        if not isinstance(body, dict) or body.get("status") != "success":
            raise PermanentError(f"prometheus did not list its targets: {str(body)[:300]}")
        targets = (body.get("data") or {}).get("activeTargets")
        if not isinstance(targets, list):
            raise PermanentError("prometheus answered /api/v1/targets without activeTargets")
        return [t for t in targets if isinstance(t, dict)]
