"""What a runbook's plan for an alert (its params and target) depends on, so that routing renders it
once per distinct input rather than once per alert.

Most runbooks render their params and target from a label or two (``job: "{{ alert.labels.job }}"``,
``cluster: "{{ (alert.labels | default({})).cluster | default('') }}"``, ``target: "{{ params.job }}"``).
The templates are read (their syntax tree, ``templating.alert_reads``) for what they look up in
``alert``; the plan is then a function of those values alone: rendering is deterministic and sees
nothing else of the alert (``run``, ``steps`` and ``schedule`` are the same for every alert of the
runbook, ``params`` come from the same lookups). Two alerts with equal values there get the same plan,
whatever their other labels, annotations or times. A runbook with a template that may see more (hands
on ``alert`` itself, rebinds the name) has no such key: routing then keys its plans on everything a
template could see of the alert.
"""

from __future__ import annotations

from typing import Any

from daemon.engine import planner
from daemon.engine.quickparse import AnyAlert
from daemon.runbooks import templating
from daemon.runbooks.schema import Runbook

Dependencies = tuple[tuple[str, ...], ...]
"""The alert fields read, each a path under ``alert`` (``("labels", "job")``, ``("labels",)``, ``("name",)``)."""

_ABSENT = ("absent",)
"""The value of a label the alert does not have (a tuple: no label value is one)."""


def dependencies(rb: Runbook) -> Dependencies | None:
    """The alert fields ``rb``'s params and target read (``templating.alert_reads``); None when one of
    its templates may see more (key on the whole alert)."""
    read: set[tuple[str, ...]] = set()
    sources = [str(v) for v in rb.params.values() if templating.is_template(v)]
    if templating.is_template(rb.target):
        sources.append(rb.target)
    for source in sources:
        reads = templating.alert_reads(source)
        if reads is None:
            return None
        read |= reads
        # A param that fails to render is reported by the labels its text names (planner._param_error).
        read |= {("labels", label) for label in planner.labels_named(source)}
    return tuple(sorted(read))


def values(alert: AnyAlert, deps: Dependencies) -> tuple[Any, ...]:
    """What ``alert`` has at each of ``deps`` (``_ABSENT`` for a label it lacks)."""
    out: list[Any] = []
    for path in deps:
        head = path[0]
        if head == "labels" or head == "annotations":
            held = alert.labels if head == "labels" else alert.annotations
            out.append(held.get(path[1], _ABSENT) if len(path) == 2 else tuple(held.items()))
        elif head == "name":
            out.append(alert.name)
        elif head == "fingerprint":
            out.append(alert.key())
        else:
            out.append(getattr(alert, head))
    return tuple(out)
