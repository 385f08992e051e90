"""Cron triggers in the configured time zone, evaluated against the store so that a restart neither
skips a job (a fire time missed while down runs once on start) nor doubles one.

A schedule's stored position (``last``) is when it last fired (or was first seen): the clock's reading
then, so every fire time missed while the daemon was down coalesces into one catch-up. Cron's own rules
for a clock that moves:
- When the clocks go back (a daylight-saving night), a job whose hour is fixed does not fire again in
  the repeated hour: ``30 2 * * *`` fires once on that night (cron: "jobs that have already run at
  those times are not re-run"). A job whose hour is a wildcard or a step fires by the clock.
- A position more than ``CLOCK_RESET`` ahead of the clock means the clock jumped forward, fired, and was
  set back: the schedule starts again from now instead of waiting for the wrong date to come round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from daemon.kits import crontab
from daemon.kits.clock import iso
from daemon.store.sqlite import Tx

NAMESPACE = "schedules"
"""kv namespace: ``<runbook>#<trigger index>`` -> {"cron", "last"} (the position)."""

CLOCK_RESET = 3 * 3600.0
"""Seconds the stored position may be ahead of the clock (a small step back, as after a fire, is
waited out); past this the clock was wrong when the schedule last fired (cron's 3-hour rule)."""


@lru_cache(maxsize=256)
def _trigger(cron: str, tz: str) -> CronTrigger:
    trigger: CronTrigger = crontab.trigger(cron, ZoneInfo(tz))
    return trigger


@dataclass(frozen=True)
class Due:
    """What a schedule does at one tick: ``fire`` (a fire time to act on now, or None) and ``last`` (the
    position to store, or None to keep it); ``reset`` when the position was ahead of the clock."""

    fire: float | None = None
    last: float | None = None
    reset: bool = False


async def advance(tx: Tx, key: str, cron: str, tz: str, now: float, log: Any, runbook: str) -> float | None:
    """Move the schedule stored under ``key`` to ``now``, in ``tx``: the fire time to act on, or None. A
    schedule first seen, or whose cron changed, starts from now and fires nothing yet."""
    rec = await tx.kv_get(NAMESPACE, key)
    if rec is None or rec.get("cron") != cron:
        await tx.kv_put(NAMESPACE, key, {"cron": cron, "last": now})
        return None
    step = due(cron, tz, float(rec["last"]), now)
    if step.reset:
        log.warning("schedule.clock_reset", runbook=runbook, stored=iso(float(rec["last"])))
    if step.last is not None:
        await tx.kv_put(NAMESPACE, key, {"cron": cron, "last": step.last})
    return step.fire


def due(cron: str, tz: str, last: float, now: float) -> Due:
    """The earliest fire time after the position ``last``, if it is not later than ``now``; missed fire
    times coalesce (the position moves to ``now``)."""
    if last > now + CLOCK_RESET:
        return Due(last=now, reset=True)
    nxt = next_fire(cron, tz, last)
    if nxt is not None and nxt <= now:
        return Due(fire=nxt, last=now)
    return Due()


def next_fire(cron: str, tz: str, after: float) -> float | None:
    """The first fire time later than ``after`` (to the second), skipping the repeat of a wall-clock time
    the clocks going back brought round again for a job whose hour is fixed."""
    zone = ZoneInfo(tz)
    trigger = _trigger(cron, tz)
    start = datetime.fromtimestamp(math.floor(after) + 1, zone)
    while (nxt := trigger.get_next_fire_time(None, start)) is not None:
        if not (_hour_fixed(cron) and _repeated(nxt)):
            return float(nxt.timestamp())
        start = _after_fold(nxt, zone)  # later than nxt: the loop ends past the repeated hour
    return None


def _hour_fixed(cron: str) -> bool:
    fields = cron.split()
    return len(fields) == 5 and not any(c in fields[1] for c in "*/")


def _repeated(when: datetime) -> bool:
    """Whether ``when`` is the second occurrence of its wall-clock time (the clocks went back)."""
    wall = when.replace(tzinfo=None)
    zone = when.tzinfo
    first = wall.replace(tzinfo=zone, fold=0).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    return first != second and when.utcoffset() == second


def _after_fold(when: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after the repeated hour ``when`` falls in."""
    t = when
    while _repeated(t):  # in UTC: wall-clock arithmetic on an aware time drops its fold
        t = (t.astimezone(UTC) + timedelta(minutes=1)).astimezone(zone)
    return t
