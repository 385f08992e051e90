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
    """The daemon died while a non-idempotent step ran; a person must check and retry or abort."""

    @property
    def active(self) -> bool:
        return self in (RunState.AWAITING_APPROVAL, RunState.RUNNING, RunState.NEEDS_ATTENTION)


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
