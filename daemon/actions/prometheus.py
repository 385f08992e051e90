"""Read-only Prometheus actions: an instant query with an expectation, and a poll until it holds."""

from __future__ import annotations

import asyncio
import operator
import re
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.clients.prometheus import PrometheusClient, Sample
from daemon.errors import TemporaryError
from daemon.kits.clock import parse_iso
from daemon.kits.durations import Duration
from daemon.kits.names import LabelValue

_COMPARISON = re.compile(r"^\s*(==|!=|<=|>=|<|>)\s*(-?[0-9.]+(?:e-?\d+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _check_expectation(v: str) -> str:
    if v in ("any", "empty", "non_empty") or _COMPARISON.match(v):
        return v
    raise ValueError("expect must be any, empty, non_empty, or a comparison such as '> 0' or '< 0.15'")


def evaluate(expect: str, samples: list[Sample]) -> tuple[bool, str]:
    """Whether the samples meet the expectation, and a sentence saying why."""
    n = len(samples)
    if expect == "any":
        return True, f"{n} series"
    if expect == "empty":
        return n == 0, "no series" if n == 0 else f"{n} series where none were expected"
    if expect == "non_empty":
        return n > 0, f"{n} series" if n else "no series where some were expected"
    m = _COMPARISON.match(expect)
    assert m is not None
    op, bound = _OPS[m.group(1)], float(m.group(2))
    if not samples:
        return False, f"no series to compare with {expect.strip()}"
    failing = [s for s in samples if not op(s.value, bound)]
    if failing:
        return False, f"{len(failing)} of {n} series not {expect.strip()} (e.g. {failing[0].value:g})"
    return True, f"all {n} series {expect.strip()}"


Expectation = Annotated[str, AfterValidator(_check_expectation)]
"""any | empty | non_empty | a comparison every sample must meet, like '> 0'."""


class QueryParams(Params):
    query: str = Field(min_length=1, max_length=10_000)
    expect: Expectation = "any"


class WaitParams(QueryParams):
    expect: Expectation = "non_empty"
    timeout: Duration = 300.0
    interval: Duration = 5.0

    @model_validator(mode="after")
    def _bounded(self) -> WaitParams:
        # As kubernetes.wait: a running step cannot be rejected, so it must end; and it must not poll
        # Prometheus in a tight loop.
        if not 0 < self.timeout <= 24 * 3600:
            raise ValueError("timeout must be more than 0 and at most 24h")
        if not 0.01 <= self.interval <= 600:
            raise ValueError("interval must be between 10ms and 10m")
        return self


def _output(ok: bool, why: str, samples: list[Sample], **extra: object) -> Output:
    return {
        "ok": ok,
        "message": why,
        "count": len(samples),
        "result": [s.as_dict() for s in samples],
        **extra,
    }


@action("prometheus.query", read_only=True, idempotent=True)
async def query(ctx: ActionContext, p: QueryParams) -> Output:
    """Run an instant PromQL query and check the result against an expectation."""
    client: PrometheusClient = ctx.need("prometheus")
    samples = await client.query(p.query)
    ok, why = evaluate(p.expect, samples)
    return _output(ok, why, samples)


@action("prometheus.wait", read_only=True, idempotent=True)
async def wait(ctx: ActionContext, p: WaitParams) -> Output:
    """Poll a PromQL query until its result meets the expectation, or give up after the timeout."""
    client: PrometheusClient = ctx.need("prometheus")
    deadline = time.monotonic() + p.timeout
    attempts = 0
    samples: list[Sample] = []
    why = "not evaluated"
    while True:
        attempts += 1
        try:
            samples = await client.query(p.query)
            ok, why = evaluate(p.expect, samples)
            if ok:
                return _output(True, why, samples, attempts=attempts)
        except TemporaryError as exc:
            why = str(exc)
        ctx.log.info("prometheus.wait.pending", attempt=attempts, reason=why)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _output(False, f"timed out after {attempts} attempts: {why}", samples, attempts=attempts)
        await asyncio.sleep(min(p.interval, remaining))


MAX_TARGETS = 100
"""Targets reported at most (a job can have thousands; the report names the first ones and counts all)."""


class TargetsParams(Params):
    job: LabelValue = Field(min_length=1)
    """The target's ``job`` label, exactly."""
    instance: LabelValue | None = None
    """The target's ``instance`` label, exactly (omit: every target of the job)."""
    health: Literal["any", "up", "down", "unknown"] = "any"
    expect: Literal["any", "non_empty", "empty"] = "any"


def _target(t: dict[str, Any], now: float) -> dict[str, Any]:
    last = str(t.get("lastScrape") or "")
    age: float | None = None
    with suppress(ValueError):
        scraped = parse_iso(last[:19] + "Z") if len(last) >= 19 else None
        if scraped is not None and scraped > 0:
            age = round(max(0.0, now - scraped), 1)
    return {
        "labels": {str(k): str(v) for k, v in (t.get("labels") or {}).items()},
        "health": str(t.get("health") or "unknown"),
        "last_error": str(t.get("lastError") or "")[:1000],
        "last_scrape": last,
        "last_scrape_age_seconds": age,
        "last_scrape_duration": t.get("lastScrapeDuration"),
        "scrape_url": str(t.get("scrapeUrl") or "")[:1000],
        "scrape_pool": str(t.get("scrapePool") or ""),
    }


@action("prometheus.targets", read_only=True, idempotent=True)
async def targets(ctx: ActionContext, p: TargetsParams) -> Output:
    """List the scrape targets of a job (and instance) with their health, last error and last scrape."""
    client: PrometheusClient = ctx.need("prometheus")
    now = ctx.clock.now()
    found = [
        _target(t, now)
        for t in await client.active_targets()
        if (t.get("labels") or {}).get("job") == p.job
        and (p.instance is None or (t.get("labels") or {}).get("instance") == p.instance)
        and (p.health == "any" or t.get("health") == p.health)
    ]
    n = len(found)
    ok = p.expect == "any" or (n > 0) == (p.expect == "non_empty")
    what = f"job {p.job!r}" + (f" instance {p.instance!r}" if p.instance is not None else "")
    down = sum(1 for t in found if t["health"] != "up")
    return {
        "ok": ok,
        "message": f"{n} target(s) of {what}, {down} not up" if n else f"no active target of {what}",
        "count": n,
        "down": down,
        "targets": found[:MAX_TARGETS],
    }


ACTIONS = [query, wait, targets]
