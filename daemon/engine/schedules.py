"""Cron triggers in the configured time zone, evaluated against the store so that a restart neither
skips a job (a fire time missed while down runs once on start) nor doubles one."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from daemon.kits import crontab


@lru_cache(maxsize=256)
def _trigger(cron: str, tz: str) -> CronTrigger:
    trigger: CronTrigger = crontab.trigger(cron, ZoneInfo(tz))
    return trigger


def due(cron: str, tz: str, last: float, now: float) -> float | None:
    """The earliest fire time after ``last`` if it is not later than ``now``; missed fire times coalesce."""
    zone = ZoneInfo(tz)
    nxt = _trigger(cron, tz).get_next_fire_time(None, datetime.fromtimestamp(last + 1, zone))
    if nxt is not None and nxt.timestamp() <= now:
        return float(nxt.timestamp())
    return None
