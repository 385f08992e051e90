"""The runbook file format (design section 3) as pydantic models."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.kits.durations import Duration

_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


def _slug(v: str) -> str:
    if not _SLUG.fullmatch(v):
        raise ValueError(f"{v!r} must be lowercase letters, digits and '-' (at most 63)")
    return v


Slug = Annotated[str, AfterValidator(_slug)]


def _fires_within_years(cron: str, years: int = 5) -> bool:
    """Whether a (valid) cron expression fires in the next ``years`` years: ``0 0 30 2 *`` (30 February)
    never does, and asking for its next fire time scanned to year 9999 at every engine tick."""
    from datetime import UTC, datetime, timedelta

    from daemon.kits import crontab

    now = datetime.now(UTC)
    nxt = crontab.trigger(cron, "UTC").get_next_fire_time(None, now)
    return nxt is not None and nxt <= now + timedelta(days=366 * years)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelMatcher(_Model):
    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @classmethod
    def parse(cls, text: str) -> LabelMatcher:
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(
                f'matcher {text!r} must look like name="value", name!="v", name=~"re" or name!~"re"'
            )
        value = m.group(3).encode().decode("unicode_escape")
        if m.group(2) in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {text!r}: invalid regex: {exc}") from None
        return cls(name=m.group(1), op=m.group(2), value=value)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit


class Check(_Model):
    """A scheduled trigger's read-only check: it runs at each fire without approval, and a run is started
    (with ``check`` in its context) only when ``when:`` renders truthy."""

    action: str
    """A read-only action; a mutating one is a validation error (a check never asks anyone)."""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str
    """A template over ``check.output`` (and ``params``, ``schedule``): true means there is work."""
    timeout: Duration | None = None
    """How long the check may take (default: the action's own timeout)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Trigger(_Model):
    alert: str | None = None
    """Alert name (the ``alertname`` label)."""
    match: list[LabelMatcher] = Field(default_factory=list)
    """Further label matchers, in Alertmanager syntax: severity="critical", namespace=~"mon.*"."""
    schedule: str | None = None
    """Cron expression (5 fields) in the configured time zone."""
    check: Check | None = None
    """Schedule triggers only: a read-only check that decides whether the fire starts a run."""

    @field_validator("match", mode="before")
    @classmethod
    def _parse_matchers(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [LabelMatcher.parse(x) if isinstance(x, str) else x for x in v]
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            from daemon.kits import crontab

            try:
                crontab.trigger(v, "UTC")
            except ValueError as exc:
                raise ValueError(f"invalid cron expression {v!r}: {exc}") from None
            if not _fires_within_years(v):
                raise ValueError(f"cron expression {v!r} never fires (no fire time in the next 5 years)")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        if (self.alert is None) == (self.schedule is None):
            raise ValueError("a trigger has exactly one of alert: or schedule:")
        if self.schedule is not None and self.match:
            raise ValueError("match: applies to alert triggers only")
        if self.check is not None and self.schedule is None:
            raise ValueError("check: applies to schedule triggers only")
        return self

    def matches_alert(self, labels: dict[str, str]) -> bool:
        return (
            self.alert is not None
            and labels.get("alertname") == self.alert
            and all(m.matches(labels) for m in self.match)
        )


class Policy(_Model):
    cooldown: Duration = 1800.0
    """After a run ends, the same target is not run again for this long."""
    max_runs_per_day: int = Field(6, ge=1)
    """Loop breaker per (runbook, target) over the last 24 hours; survives restarts."""
    on_resolved: Literal["cancel", "ignore"] = "cancel"
    """cancel: an alert resolving cancels its run if no mutating step has run yet (a run that already
    changed something goes on, so it can finish cleanly). ignore: only recorded."""


class Approval(_Model):
    approvers: list[str] = Field(default_factory=lambda: ["sre"], min_length=1)
    """Approver groups from the config."""
    min_approvers: int = Field(1, ge=1, le=5)
    """Distinct people who must approve each step."""
    timeout: Duration | None = None
    """An unanswered step expires the run after this long (default: approval.default_timeout)."""


class Undo(_Model):
    """The exact inverse of a mutating step, approved with it and run by the engine when the run ends
    (whatever the end) without asking again. Only true inverses qualify: expire the silence the step
    created, restore the value it recorded, remove the taint it added."""

    action: str
    """A mutating action (an inverse is a change too)."""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    """Parameters; templates may read the step's own output (``steps['<this step>'].output``)."""
    when: str | None = None
    """Run the undo only once this renders truthy (e.g. the backlog has shipped); until then the run
    stays ``undoing`` and the guard is re-checked each tick."""
    timeout: Duration | None = None
    """How long an undo may wait for ``when:`` after the run ended; then the run needs attention."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Step(_Model):
    id: Slug
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | None = None
    """A template; the step is skipped unless it renders truthy."""
    description: str = ""
    timeout: Duration | None = None
    continue_on_failure: bool = False
    """Let later steps run (and test ``steps['id'].ok``) when this one fails."""
    undo: Undo | None = None
    """The step's exact inverse (mutating steps only); see :class:`Undo`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Runbook(_Model):
    name: Slug
    description: str = ""
    triggers: list[Trigger] = Field(min_length=1)
    target: str = "{{ run.runbook }}"
    """Template for the run's identity: at most one active run per (runbook, target)."""
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Parameter defaults (templates over ``alert``); a manual trigger may set them."""
    policy: Policy = Policy()
    approval: Approval = Approval()
    channel: str | None = None
    """Slack channel for this runbook's approval requests (default: slack.channel)."""
    steps: list[Step] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _param_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", k):
                raise ValueError(f"param name {k!r} must be lowercase letters, digits and _")
        return v

    def step_index(self, step_id: str) -> int | None:
        for i, s in enumerate(self.steps):
            if s.id == step_id:
                return i
        return None

    @property
    def alert_names(self) -> list[str]:
        return [t.alert for t in self.triggers if t.alert]
