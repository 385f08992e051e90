"""Cron expressions as cron reads them, for APScheduler.

APScheduler 3's ``CronTrigger.from_crontab`` numbers the days of the week from Monday (0 = Monday), not
as cron does (0 or 7 = Sunday, 1 = Monday): ``0 6 * * 1`` would fire on Tuesdays. ``trigger`` rewrites
the day-of-week field into day names, which both read the same way, before handing the expression over.
"""

from __future__ import annotations

from typing import Any

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day(text: str) -> int:
    word = text.strip().lower()
    if word in _DAYS:
        return _DAYS.index(word)
    if word.isdigit() and 0 <= int(word) <= 7:
        return int(word)
    raise ValueError(f"day of week {text!r}: expected 0-7 (0 and 7 are Sunday) or sun..sat")


def day_of_week(field: str) -> str:
    """A cron day-of-week field (numbers, names, ranges, lists, steps) as a list of day names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        every = int(step) if step.isdigit() and int(step) > 0 else None
        if step and every is None:
            raise ValueError(f"day of week {part!r}: the step must be a positive number")
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            first, _, last = span.partition("-")
            lo, hi = _day(first), _day(last)
        else:
            lo = _day(span)
            hi = 6 if every else lo
        if hi < lo:
            raise ValueError(f"day of week {part!r}: the range runs backwards")
        days.update(range(lo, hi + 1, every or 1))
    return ",".join(_DAYS[d] for d in sorted({d % 7 for d in days}))


def trigger(cron: str, timezone: Any) -> Any:
    """An APScheduler CronTrigger for a 5-field cron expression, with cron's day-of-week numbering."""
    from apscheduler.triggers.cron import CronTrigger

    fields = cron.split()
    if len(fields) == 5:
        fields[4] = day_of_week(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=timezone)
