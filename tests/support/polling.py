"""Bounded polling for state reached by other processes: never a sleep standing in for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll ``probe()`` until it returns something truthy and return that; fail naming ``what`` and the
    last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {got!r}")
        time.sleep(interval)
