"""Render a run's params, target and steps from its runbook and context; hash each step's plan."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from pydantic import ValidationError

from daemon.actions.base import Action, ActionRegistry
from daemon.errors import TemplateError
from daemon.runbooks import templating
from daemon.runbooks.schema import Runbook, Step
from daemon.store.records import RunRecord, StepRecord, StepState, UndoRecord


class PlanError(Exception):
    """The step cannot be planned (template or parameter error); the run fails with this message."""


def render_params(rb: Runbook, ctx: dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Params from the runbook's defaults (templates over the alert), overridden by ``given``."""
    given = given or {}
    unknown = sorted(set(given) - set(rb.params))
    if unknown:
        # Named, but not all of a hostile request's 90,000 (its answer was 700 kB): the first few.
        shown = ", ".join(name[:64] for name in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise PlanError(f"unknown param(s) {shown}{more}; {rb.name} takes: {', '.join(rb.params) or 'none'}")
    out: dict[str, Any] = {}
    for name, default in rb.params.items():
        if name in given:
            out[name] = _as_type_of(name, given[name], default)
            continue
        try:
            out[name] = templating.render(default, ctx)
        except TemplateError as exc:
            raise PlanError(_param_error(name, default, ctx, exc)) from None
    return out


_ALERT_LABEL = re.compile(r"""alert\.labels(?:\.([A-Za-z_]\w*)|\[\s*['"]([^'"]+)['"]\s*\])""")


def labels_named(source: str) -> list[str]:
    """The alert labels a template's text names (``alert.labels.x``, ``alert.labels['x']``), in order:
    the ones a param error is worded with."""
    return [m.group(1) or m.group(2) for m in _ALERT_LABEL.finditer(source)]


def _param_error(name: str, default: Any, ctx: dict[str, Any], exc: TemplateError) -> str:
    """Say which alert label is missing, in the operator's words rather than the template engine's."""
    alert = ctx.get("alert") or {}
    labels = alert.get("labels") or {}
    for _, source in templating.iter_templates(default):
        for label in labels_named(source):
            if label in labels:
                continue
            if not alert:
                return (
                    f"param {name} is needed: its default reads the alert label `{label}` and a run started "
                    f"by hand has no alert; give it (--param {name}=...)"
                )
            return f"the alert has no label `{label}` (needed by param {name})"
    return f"param {name}: {exc} (give it explicitly)"


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _as_type_of(name: str, value: Any, default: Any) -> Any:
    """A given param as the type of the runbook's default: the CLI sends every value as a string, and
    the string "false" is true in a ``when:``."""
    shown = repr(value) if len(repr(value)) <= 64 else repr(value)[:61] + "..."
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        word = value.strip().lower() if isinstance(value, str) else None
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise PlanError(f"param {name}: expected true or false, not {shown}")
    if isinstance(default, int | float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            try:
                number = float(value.strip())
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
        raise PlanError(f"param {name}: expected a number, not {shown}")
    return value


def render_target(rb: Runbook, ctx: dict[str, Any]) -> str:
    try:
        target = str(templating.render(rb.target, ctx))
    except TemplateError as exc:
        raise PlanError(f"target: {exc}") from None
    if not target.strip():
        raise PlanError("target rendered empty")
    return bounded_target(target)


MAX_TARGET = 512
"""Characters of a run's target; a longer one keeps its start and ends in a hash of the whole."""


def bounded_target(target: str) -> str:
    """``target`` if it fits ``MAX_TARGET``, else its start, ``~`` and 16 hex digits of its SHA-256:
    cutting it short alone gave two targets differing after the cut one identity (one run, one
    cooldown), and label values may be 4096 characters long."""
    if len(target) <= MAX_TARGET:
        return target
    digest = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{target[: MAX_TARGET - 17]}~{digest}"


def step_context(run: RunRecord, steps: list[StepRecord]) -> dict[str, Any]:
    done = {
        s.step_id: {
            "ok": s.state == StepState.SUCCEEDED,
            "state": str(s.state),
            "output": s.output or {},
            "skipped": s.state == StepState.SKIPPED,
        }
        for s in steps
        if s.state in (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED)
    }
    return {
        "alert": run.context.get("alert", {}),
        "schedule": run.context.get("schedule", {}),
        "check": run.context.get("check", {}),
        "params": run.params,
        "steps": done,
        "run": {
            "id": run.id,
            "runbook": run.runbook,
            "target": run.target,
            "dry_run": run.dry_run,
            "alert_resolved": run.alert_resolved,
        },
    }


def should_run(step: Step, ctx: dict[str, Any]) -> bool:
    if step.when is None:
        return True
    try:
        return bool(templating.render(step.when, ctx))
    except TemplateError as exc:
        raise PlanError(f"step {step.id}: when: {exc}") from None


def render_plan(step: Step, action: Action, ctx: dict[str, Any]) -> dict[str, Any]:
    """The step's parameters rendered and validated, in the form they will run with."""
    try:
        rendered = templating.render(step.with_, ctx)
    except TemplateError as exc:
        raise PlanError(f"step {step.id}: {exc}") from None
    try:
        model = action.params.model_validate(rendered)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise PlanError(f"step {step.id}: invalid parameters for {action.name}: {problems}") from None
    return model.model_dump(mode="json")


_PARAM_REF = re.compile(r"""params(?:\.([A-Za-z_]\w*)|\[\s*['"]([^'"]+)['"]\s*\])""")


def check_given_params(rb: Runbook, registry: ActionRegistry, ctx: dict[str, Any]) -> None:
    """Before a manual run is created: the first step, rendered with these params, must validate with its
    action's model, so a bad value is refused naming the param instead of starting a run born failed.
    A first step that needs more than the params (an earlier output, a false ``when:``) is left to run time."""
    if not rb.steps:
        return
    step = rb.steps[0]
    action = registry.get(step.action)
    if action is None:
        return
    try:
        if not should_run(step, ctx):
            return
        rendered = templating.render(step.with_, ctx)
    except (PlanError, TemplateError):
        return
    validate_with(action, step.with_, rendered, f"step {step.id}")


def validate_with(action: Action, with_: Any, rendered: Any, where: str) -> None:
    """``rendered`` (``with_`` rendered) must validate with ``action``'s model: PlanError naming the params
    behind each bad value otherwise (``where``: the step or check, for the message)."""
    try:
        action.params.model_validate(rendered)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            names = sorted(_params_named(_at(with_, e["loc"])))
            field = ".".join(str(p) for p in e["loc"]) or "params"
            msg = e["msg"].removeprefix("Value error, ")
            who = f"param {', '.join(names)}" if names else where
            problems.append(f"{who}: {msg} ({where}, {action.name} {field})")
        raise PlanError("; ".join(problems)) from None


def _at(value: Any, loc: tuple[int | str, ...]) -> Any:
    """The part of a step's `with:` at a validation error's location (None when it is not there)."""
    for part in loc:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return None
    return value


def _params_named(value: Any) -> set[str]:
    return {a or b for _, t in templating.iter_templates(value) for a, b in _PARAM_REF.findall(t)}


def _hash16(doc: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``doc`` as sorted JSON: what an approval binds."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def plan_hash(run_id: str, step: StepRecord, plan: dict[str, Any], undo: dict[str, Any] | None = None) -> str:
    """What an approval is bound to: the run, the step, its attempt, the action and its exact params,
    and the step's undo as shown with it (approving the step approves its undo)."""
    doc: dict[str, Any] = {
        "run": run_id,
        "step": step.step_id,
        "attempt": step.attempts,
        "action": step.action,
        "params": plan,
    }
    if undo is not None:
        doc["undo"] = undo
    return _hash16(doc)


def undo_retry_hash(undo: UndoRecord) -> str:
    """What approving the retry of a failed undo is bound to: the run, the step, the undo as approved
    with it, and that failure (its time), so a hash noted for an earlier failure, or a step's own plan
    hash from a stale button, retries nothing."""
    doc = {
        "run": undo.run_id,
        "undo_of": undo.step_id,
        "action": undo.action,
        "approved": undo.approved,
        "failed_at": undo.finished_at,
        "attempts": undo.attempts,
    }
    return _hash16(doc)


LeafPath = list[str | int]


def render_undo(step: Step, ctx: dict[str, Any]) -> dict[str, Any]:
    """The undo as the approver sees it with its step: every template rendered now, except those that
    read the step's own output (listed in ``deferred``; they render when the undo runs)."""
    assert step.undo is not None
    undo = step.undo
    deferred: list[LeafPath] = []

    def walk(value: Any, path: LeafPath) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, [*path, k]) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, [*path, i]) for i, v in enumerate(value)]
        if not templating.is_template(value):
            return value
        if step.id in templating.references(templating.check_syntax(value), "steps"):
            deferred.append(path)
            return value
        try:
            return templating.render_value(value, ctx)
        except TemplateError as exc:
            raise PlanError(f"step {step.id}: undo: {exc}") from None

    rendered = walk(undo.with_, [])
    return {
        "action": undo.action,
        "with": rendered,
        "deferred": deferred,
        "when": undo.when,
        "timeout": undo.timeout,
    }


def undo_params(approved: dict[str, Any], action: Action, ctx: dict[str, Any]) -> dict[str, Any]:
    """The undo's parameters as they will run: the approved values, with the deferred leaves rendered
    over the run's steps now; validated like any step's."""
    params = json.loads(json.dumps(approved["with"]))
    for path in approved.get("deferred", []):
        holder: Any = params
        for key in path[:-1]:
            holder = holder[key]
        try:
            holder[path[-1]] = templating.render_value(holder[path[-1]], ctx)
        except TemplateError as exc:
            raise PlanError(f"undo: {exc}") from None
    try:
        model = action.params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise PlanError(f"undo: invalid parameters for {action.name}: {problems}") from None
    return model.model_dump(mode="json")


def undo_due(approved: dict[str, Any], ctx: dict[str, Any]) -> bool:
    """Whether the undo's ``when:`` holds now (no ``when:``: always)."""
    when = approved.get("when")
    if when is None:
        return True
    try:
        return bool(templating.render(when, ctx))
    except TemplateError as exc:
        raise PlanError(f"undo: when: {exc}") from None


def new_steps(run_id: str, rb: Runbook, registry: ActionRegistry) -> list[StepRecord]:
    out = []
    for i, s in enumerate(rb.steps):
        act = registry.get(s.action)
        assert act is not None, "runbooks are validated against the registry at load"
        out.append(
            StepRecord(
                run_id=run_id,
                idx=i,
                step_id=s.id,
                action=s.action,
                state=StepState.PENDING,
                mutating=not act.read_only,
                idempotent=act.idempotent,
            )
        )
    return out
