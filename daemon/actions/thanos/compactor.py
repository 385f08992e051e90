"""Is the Thanos compactor working? Retention waits for it: it is what downsamples (and deletes marks).

Read from Prometheus (or Thanos Query), the compactor's own metrics (thanos cmd/thanos/compact.go):
``thanos_compact_halted`` is 1 once it halted on an error it will not retry (overlapping blocks, a
corrupt block) and ``thanos_compact_iterations_total`` counts completed iterations. Retention must not
mark anything when it is halted, when it completed no iteration in the last 24h, or when there is no
compactor series at all (nobody can tell that downsampling keeps up).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator

from daemon.clients.prometheus import PrometheusClient
from daemon.errors import ActionError

_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\\n]|\\.)*"\s*'
_MATCHERS = re.compile(rf"^({_MATCHER}(,{_MATCHER})*,?)?\s*$")
WINDOW = "24h"


def _check_matchers(v: str) -> str:
    if len(v) > 500 or not _MATCHERS.match(v):
        raise ValueError('compactor_selector must be PromQL label matchers, e.g. job="thanos-compact"')
    return v


Matchers = Annotated[str, AfterValidator(_check_matchers)]
"""PromQL label matchers without braces (``job="thanos-compact", namespace="monitoring"``), or ""."""


async def compactor_health(prom: PrometheusClient, selector: str) -> dict[str, Any]:
    """``healthy`` and, when not, ``reason``: what an operator must look at before retention runs."""
    sel = "{" + selector + "}"
    try:
        halted = await prom.query(f"max(thanos_compact_halted{sel})")
        series = await prom.query(f"count(thanos_compact_iterations_total{sel})")
        # min: EVERY compactor the selector names completed an iteration (a sum let a working compactor of
        # another bucket or shard hide an idle one).
        done = await prom.query(f"min(increase(thanos_compact_iterations_total{sel}[{WINDOW}]))")
    except ActionError as exc:
        return {"healthy": False, "selector": selector, "reason": f"cannot ask Prometheus: {exc}"}
    out: dict[str, Any] = {"selector": selector, "window": WINDOW}
    halted_v = halted[0].value if halted else None
    iterations = done[0].value if done else None
    out["halted"] = None if halted_v is None else halted_v == 1
    out["iterations_24h"] = None if iterations is None or math.isnan(iterations) else round(iterations, 1)
    if not halted and not series:
        out |= {"healthy": False, "reason": f"no compactor series (thanos_compact_*{sel}) in Prometheus"}
    elif halted_v is not None and halted_v >= 1:
        out |= {
            "healthy": False,
            "reason": "the compactor is halted (thanos_compact_halted == 1): it stopped compacting and "
            "downsampling; see its logs",
        }
    elif iterations is None or math.isnan(iterations) or iterations <= 0:
        out |= {
            "healthy": False,
            "reason": f"the compactor completed no iteration in the last {WINDOW} "
            "(thanos_compact_iterations_total not increasing): downsampling is behind",
        }
    else:
        out |= {"healthy": True, "reason": None}
    return out
