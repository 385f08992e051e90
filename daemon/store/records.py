"""Persisted records: what the store reads and writes, nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    """A step waits for a person (or for the budget / pause before it starts)."""
    RUNNING = "running"
    """A step's action is executing."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    """A step's approval deadline passed; nothing more ran."""
    CANCELLED = "cancelled"
    """The alert resolved before anything was changed (on_resolved: cancel)."""
    NEEDS_ATTENTION = "needs_attention"
    """The daemon died while a non-idempotent step ran, or an undo failed; a person must check."""
    UNDOING = "undoing"
    """The run's steps are over; the undos of the steps that changed something run (or wait for their
    ``when:``). The run keeps its target until they are done."""

    @property
    def active(self) -> bool:
        return self in (
            RunState.AWAITING_APPROVAL,
            RunState.RUNNING,
            RunState.NEEDS_ATTENTION,
            RunState.UNDOING,
        )


class StepState(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass
class RunRecord:
    id: str
    runbook: str
    target: str
    state: RunState
    trigger: str
    """alert | manual | schedule"""
    requester: str | None
    """Who started a manual run (they may not approve its mutating steps)."""
    params: dict[str, Any]
    context: dict[str, Any]
    """The triggering alert (labels, annotations, fingerprint, ...) or schedule time."""
    definition: dict[str, Any]
    """The runbook as it was when the run started: later edits do not change a running plan."""
    created_at: float
    updated_at: float
    dry_run: bool
    ended_at: float | None = None
    current_step: int = 0
    mutated: bool = False
    """A mutating step has started: the run no longer cancels on a resolved alert."""
    alert_resolved: bool = False
    outcome: str | None = None
    """A sentence saying why the run ended as it did."""


@dataclass
class StepRecord:
    run_id: str
    idx: int
    step_id: str
    action: str
    state: StepState
    mutating: bool
    idempotent: bool
    plan: dict[str, Any] | None = None
    """The rendered parameters, exactly as they will run."""
    plan_hash: str | None = None
    requested_at: float | None = None
    deadline: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class ApprovalRecord:
    run_id: str
    step_id: str
    identity: str
    via: str
    plan_hash: str
    at: float


@dataclass
class EventRecord:
    run_id: str
    at: float
    event: str
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)


class UndoState(StrEnum):
    PLANNED = "planned"
    """Approved with its step; runs when the run ends, if the step changed something."""
    SKIPPED = "skipped"
    """Its step never started, so there is nothing to undo."""
    WAITING = "waiting"
    """The run ended; the undo waits for its ``when:`` (or for an undo after it in the run to finish)."""
    READY = "ready"
    """Its ``when:`` held; it starts once the blast-radius budget allows."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """It failed, could not be rendered, timed out waiting for ``when:``, or was interrupted (not
    idempotent): the run needs a person."""


@dataclass
class UndoRecord:
    """The undo of one step (``steps[idx]``): what was approved with the step, and how it went."""

    run_id: str
    idx: int
    step_id: str
    action: str
    state: UndoState
    idempotent: bool
    approved: dict[str, Any]
    """What the approver saw and the plan hash covers: ``action``, ``with`` (rendered, except the
    leaves listed in ``deferred``, which read the step's own output and render when the undo runs),
    ``deferred``, ``when`` (its source) and ``timeout`` (seconds)."""
    params: dict[str, Any] | None = None
    """The parameters exactly as the undo ran with them."""
    due_at: float | None = None
    """When the run ended and the undo became due."""
    deadline: float | None = None
    """Past this, an undo still waiting for ``when:`` fails and the run needs attention."""
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
