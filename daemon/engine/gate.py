"""The approval rules (design section 4), as pure functions so Slack, the API and the CLI share them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from daemon.engine.identity import Identity
from daemon.errors import Forbidden
from daemon.runbooks.schema import Runbook
from daemon.store.records import ApprovalRecord, RunRecord, StepRecord


def groups_of(identity: Identity, approvers: Mapping[str, Iterable[str]]) -> set[str]:
    return {g for g, members in approvers.items() if identity.name in members}


PersonOf = Callable[[str], str]
"""Maps an identity (token name, slack:<id>) to the person behind it (config ``people``)."""


def check_may_approve(
    identity: Identity,
    rb: Runbook,
    run: RunRecord,
    step: StepRecord,
    approvers: Mapping[str, Iterable[str]],
    person_of: PersonOf = str,
) -> None:
    """Raise Forbidden unless this identity may approve (or reject) this step."""
    if not identity.at_least("approver"):
        raise Forbidden(f"{identity.name} has role {identity.role}; approving needs approver or admin")
    allowed = set(rb.approval.approvers)
    if not groups_of(identity, approvers) & allowed:
        raise Forbidden(
            f"{identity.name} is not in an approver group of runbook {rb.name} ({', '.join(sorted(allowed))})"
        )
    requester = run.requester
    own_run = (
        run.trigger == "manual" and requester is not None and person_of(requester) == person_of(identity.name)
    )
    if step.mutating and own_run:
        raise Forbidden(
            f"{identity.name} started this run (as {requester}) and cannot approve its mutating step "
            f"{step.step_id} (separation of duties): ask another approver"
        )


def approvers_of(
    step: StepRecord, approvals: Iterable[ApprovalRecord], person_of: PersonOf = str
) -> list[str]:
    """Distinct people whose approval counts for the step's current plan."""
    seen: list[str] = []
    for a in approvals:
        person = person_of(a.identity)
        if a.step_id == step.step_id and a.plan_hash == step.plan_hash and person not in seen:
            seen.append(person)
    return seen
