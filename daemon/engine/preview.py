"""What an Alertmanager payload would start, rendered without touching anything (``runbookd plan``)."""

from __future__ import annotations

from typing import Any

from daemon.actions.base import ActionRegistry
from daemon.engine import planner
from daemon.engine.events import WebhookPayload
from daemon.errors import TemplateError
from daemon.runbooks import templating
from daemon.runbooks.loader import LoadedRunbook


def preview(
    payload: WebhookPayload, runbooks: dict[str, LoadedRunbook], registry: ActionRegistry
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    unmatched: list[str] = []
    for alert in payload.alerts:
        if alert.status != "firing":
            continue
        matched = [
            lr.runbook
            for lr in runbooks.values()
            if any(t.matches_alert(alert.labels) for t in lr.runbook.triggers)
        ]
        if not matched:
            unmatched.append(alert.name)
        for rb in matched:
            ctx: dict[str, Any] = {"alert": alert.as_context(), "schedule": {}, "steps": {}}
            ctx["run"] = {
                "id": "(new)",
                "runbook": rb.name,
                "target": "",
                "dry_run": True,
                "alert_resolved": False,
            }
            entry: dict[str, Any] = {"runbook": rb.name, "alert": alert.name, "fingerprint": alert.key()}
            try:
                params = planner.render_params(rb, ctx)
                entry["params"] = params
                entry["target"] = planner.render_target(rb, {**ctx, "params": params})
            except planner.PlanError as exc:
                entry["error"] = str(exc)
                runs.append(entry)
                continue
            ctx["params"] = params
            entry["steps"] = [_step(step, rb.name, registry, ctx) for step in rb.steps]
            runs.append(entry)
    return {"runs": runs, "unmatched_alerts": sorted(set(unmatched))}


def _undo(step: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    """The step's undo as its approver will see it (what reads earlier steps' output stays a template)."""
    try:
        return planner.render_undo(step, ctx)
    except planner.PlanError:
        u = step.undo
        return {
            "action": u.action,
            "with": u.with_,
            "when": u.when,
            "timeout": u.timeout,
            "note": "rendered when the earlier steps it uses have run",
        }


def _step(step: Any, runbook: str, registry: ActionRegistry, ctx: dict[str, Any]) -> dict[str, Any]:
    action = registry.get(step.action)
    assert action is not None
    out: dict[str, Any] = {"id": step.id, "action": step.action, "mutating": not action.read_only}
    if step.when is not None:
        out["when"] = step.when
    if step.undo is not None:
        out["undo"] = _undo(step, ctx)
    uses_steps = any(
        "steps" in templating.free_names(templating.check_syntax(src))
        for _, src in templating.iter_templates(step.with_)
    )
    if uses_steps:
        out["plan"] = None
        out["note"] = "rendered when the earlier steps it uses have run"
        return out
    try:
        out["plan"] = planner.render_plan(step, action, ctx)
    except (planner.PlanError, TemplateError) as exc:
        out["plan"] = None
        out["error"] = str(exc)
    return out
