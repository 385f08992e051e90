"""How a run is shown to people and tools: one dict used by the API, the CLI and notifiers; and how the
loaded runbooks are listed."""

from __future__ import annotations

from typing import Any

from daemon.actions.base import ActionRegistry
from daemon.engine.planner import undo_retry_hash
from daemon.errors import NotFound
from daemon.kits.clock import iso
from daemon.runbooks.loader import LoadedRunbook
from daemon.store.base import Row
from daemon.store.records import ApprovalRecord, EventRecord, RunRecord, StepRecord, UndoRecord, UndoState
from daemon.store.sqlite import Tx


def _t(ts: float | None) -> str | None:
    return iso(ts) if ts is not None else None


def undo_view(undo: UndoRecord) -> dict[str, Any]:
    """A step's undo: as approved with the step (``with`` holds the templates still to render from the
    step's output, listed in ``deferred``), and how it ran once the run ended."""
    approved = undo.approved
    return {
        "action": undo.action,
        "with": approved.get("with"),
        "deferred": approved.get("deferred", []),
        "when": approved.get("when"),
        "timeout": approved.get("timeout"),
        "state": str(undo.state),
        "idempotent": undo.idempotent,
        "params": undo.params,
        "due_at": _t(undo.due_at),
        "deadline": _t(undo.deadline),
        "started_at": _t(undo.started_at),
        "finished_at": _t(undo.finished_at),
        "attempts": undo.attempts,
        "output": undo.output,
        "error": undo.error,
        "retry_hash": undo_retry_hash(undo) if undo.state == UndoState.FAILED else None,
    }


def _undo_declared(spec: dict[str, Any]) -> dict[str, Any]:
    """A step's undo as the runbook declares it, before the step is planned (templates unrendered)."""
    timeout = spec.get("timeout")
    return {
        "action": spec.get("action"),
        "with": spec.get("with", {}),
        "deferred": None,
        "when": spec.get("when"),
        "timeout": timeout,
        "state": "pending",
    }


def step_view(
    step: StepRecord,
    approvals: list[ApprovalRecord],
    description: str = "",
    undo: UndoRecord | dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": step.step_id,
        "index": step.idx,
        "action": step.action,
        "description": description,
        "state": str(step.state),
        "mutating": step.mutating,
        "idempotent": step.idempotent,
        "plan": step.plan,
        "plan_hash": step.plan_hash,
        "requested_at": _t(step.requested_at),
        "deadline": _t(step.deadline),
        "started_at": _t(step.started_at),
        "finished_at": _t(step.finished_at),
        "attempts": step.attempts,
        "output": step.output,
        "error": step.error,
        "approvals": [
            {"by": a.identity, "via": a.via, "at": iso(a.at), "plan_hash": a.plan_hash}
            for a in approvals
            if a.step_id == step.step_id
        ],
        "undo": undo_view(undo) if isinstance(undo, UndoRecord) else undo,
    }


def run_view(
    run: RunRecord,
    steps: list[StepRecord],
    approvals: list[ApprovalRecord],
    events: list[EventRecord] | None = None,
    *,
    undos: list[UndoRecord] | None = None,
) -> dict[str, Any]:
    descriptions = {s.get("id"): s.get("description", "") for s in run.definition.get("steps", [])}
    declared = {s.get("id"): s["undo"] for s in run.definition.get("steps", []) if s.get("undo")}
    current = steps[run.current_step].step_id if run.current_step < len(steps) else None
    alert = run.context.get("alert") or {}
    undo_of = {u.idx: u for u in undos or []}
    view: dict[str, Any] = {
        "id": run.id,
        "runbook": run.runbook,
        "target": run.target,
        "state": str(run.state),
        "trigger": run.trigger,
        "requester": run.requester,
        "dry_run": run.dry_run,
        "params": run.params,
        "alert": {
            k: alert.get(k) for k in ("name", "status", "labels", "annotations", "generatorURL", "startsAt")
        }
        if alert
        else None,
        "alert_resolved": run.alert_resolved,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "ended_at": _t(run.ended_at),
        "outcome": run.outcome,
        "current_step": current,
        "approval": run.definition.get("approval", {}),
        "steps": [
            step_view(
                s,
                approvals,
                descriptions.get(s.step_id, ""),
                undo_of.get(s.idx)
                or (_undo_declared(declared[s.step_id]) if s.step_id in declared else None),
            )
            for s in steps
        ],
    }
    if events is not None:
        view["timeline"] = [{"at": iso(e.at), "event": e.event, "by": e.actor, **e.detail} for e in events]
    return view


def run_summary(run: Row, steps: list[Row]) -> dict[str, Any]:
    """A run as GET /api/v1/runs lists it (``Tx.run_summaries``): ``run_view`` without the alert, the
    params, the approval policy and each step's plan, output and approvals (GET /api/v1/runs/{id} has them)."""
    current = int(run["current_step"])
    return {
        "id": str(run["id"]),
        "runbook": str(run["runbook"]),
        "target": str(run["target"]),
        "state": str(run["state"]),
        "trigger": str(run["trigger"]),
        "requester": run["requester"],
        "dry_run": bool(run["dry_run"]),
        "alert_resolved": bool(run["alert_resolved"]),
        "created_at": iso(float(run["created_at"])),
        "updated_at": iso(float(run["updated_at"])),
        "ended_at": _t(run["ended_at"]),
        "outcome": run["outcome"],
        "current_step": str(steps[current]["step_id"]) if current < len(steps) else None,
        "steps": [
            {
                "id": str(s["step_id"]),
                "index": int(s["idx"]),
                "action": str(s["action"]),
                "state": str(s["state"]),
                "mutating": bool(s["mutating"]),
            }
            for s in steps
        ],
    }


async def view_of(tx: Tx, run_id: str, timeline: bool = True) -> dict[str, Any]:
    run = await tx.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    events = await tx.events_of(run_id) if timeline else None
    steps, undos = await tx.steps_of(run_id), await tx.undos_of(run_id)
    return run_view(run, steps, await tx.approvals_of(run_id), events, undos=undos)


def runbook_list(runbooks: dict[str, LoadedRunbook], registry: ActionRegistry) -> list[dict[str, Any]]:
    out = []
    for lr in sorted(runbooks.values(), key=lambda x: x.runbook.name):
        rb = lr.runbook
        out.append(
            {
                "name": rb.name,
                "description": rb.description.strip(),
                "file": str(lr.path),
                "alerts": rb.alert_names,
                "schedules": [t.schedule for t in rb.triggers if t.schedule],
                "params": rb.params,
                "approval": rb.approval.model_dump(mode="json"),
                "policy": rb.policy.model_dump(mode="json"),
                "steps": [
                    {
                        "id": s.id,
                        "action": s.action,
                        "mutating": _mutating(registry, s.action),
                        "undo": s.undo.action if s.undo is not None else None,
                    }
                    for s in rb.steps
                ],
            }
        )
    return out


def _mutating(registry: ActionRegistry, name: str) -> bool:
    action = registry.get(name)
    return action is None or not action.read_only  # unknown (cannot happen after load): assume the worst
