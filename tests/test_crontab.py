"""Cron's day-of-week numbering (0 and 7 = Sunday, 1 = Monday) survives the hand-over to APScheduler 3,
whose from_crontab counts from Monday: without the rewrite, a weekly Monday job fires on Tuesdays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.engine import schedules
from daemon.kits import crontab

SUNDAY_NOON = datetime(2027, 1, 17, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "weekday"),
    [
        ("0 6 * * 1", "Mon"),
        ("0 6 * * 0", "Sun"),
        ("0 6 * * 7", "Sun"),
        ("0 6 * * 5", "Fri"),
        ("0 6 * * mon", "Mon"),
    ],
)
def test_day_of_week_is_read_as_cron_reads_it(cron: str, weekday: str) -> None:
    fire = schedules.due(cron, "UTC", SUNDAY_NOON.timestamp(), SUNDAY_NOON.timestamp() + 8 * 86400).fire
    assert fire is not None
    assert datetime.fromtimestamp(fire, UTC).strftime("%a %H:%M") == f"{weekday} 06:00"


def test_ranges_lists_and_steps() -> None:
    assert crontab.day_of_week("1-5") == "mon,tue,wed,thu,fri"
    assert crontab.day_of_week("5-7") == "sun,fri,sat"
    assert crontab.day_of_week("*/2") == "sun,tue,thu,sat"
    assert crontab.day_of_week("sun,3") == "sun,wed"
    assert crontab.day_of_week("*") == "*"
    for bad in ("8", "5-2", "x", "1/0"):
        with pytest.raises(ValueError):
            crontab.day_of_week(bad)
