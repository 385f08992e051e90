"""Alertmanager actions: silence the follow-on alerts of an incident while a person works on it."""

from __future__ import annotations

import re
import uuid

from pydantic import Field, field_validator, model_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.clients.alertmanager import AlertmanagerClient
from daemon.kits.clock import iso
from daemon.kits.durations import Duration
from daemon.kits.names import LabelName, LabelValue


class Matcher(Params):
    name: LabelName
    value: LabelValue
    is_regex: bool = False
    is_equal: bool = True


def _matches_empty(m: Matcher) -> bool:
    """Whether the matcher matches an alert that lacks the label (Alertmanager reads it as "")."""
    hit = re.fullmatch(m.value, "") is not None if m.is_regex else m.value == ""
    return hit == m.is_equal


class SilenceParams(Params):
    matchers: list[Matcher] = Field(min_length=1, max_length=20)
    duration: Duration = 3600.0
    comment: str = Field("", max_length=1000)
    require: list[LabelName] = Field(default_factory=list, max_length=10)
    """Labels the silence must pin down: each needs exactly one matcher ``name="value"`` (equal, not a
    regex, not empty). A runbook lists here what its silence is about (``[job, instance]``), so a label
    value that renders empty or a matcher edited away can never widen it."""

    @field_validator("duration")
    @classmethod
    def _bounded(cls, v: float) -> float:
        if not 60 <= v <= 7 * 86400:
            raise ValueError("a silence lasts between 1m and 7d")
        return v

    @field_validator("matchers")
    @classmethod
    def _regexes_valid(cls, v: list[Matcher]) -> list[Matcher]:
        for m in v:
            if m.is_regex:
                try:
                    re.compile(m.value)
                except re.error as exc:
                    raise ValueError(f"matcher {m.name}: invalid regex: {exc}") from None
        if all(m.value in ("", ".*", ".+") and m.is_regex for m in v):
            raise ValueError("matchers would silence everything")
        for m in v:
            if m.is_equal and not m.is_regex and m.value == "":
                raise ValueError(
                    f'matcher {m.name}="" matches every alert without that label; a silence names a value'
                )
        if all(_matches_empty(m) for m in v):
            raise ValueError("at least one matcher must select a label value (as Alertmanager requires)")
        return v

    @model_validator(mode="after")
    def _required_labels(self) -> SilenceParams:
        for name in self.require:
            exact = [m for m in self.matchers if m.name == name and m.is_equal and not m.is_regex and m.value]
            if len(exact) != 1 or any(m.name == name and m.is_regex for m in self.matchers):
                raise ValueError(
                    f'the silence must match {name} exactly once with {name}="<value>" (required by the '
                    f"runbook, so that it cannot be wider than asked)"
                )
        return self


class ExpireParams(Params):
    silence_id: str

    @field_validator("silence_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        try:
            return str(uuid.UUID(v))
        except ValueError:
            raise ValueError(f"{v[:64]!r} is not a silence id (UUID)") from None


@action("alertmanager.silence", read_only=False, idempotent=True)
async def silence(ctx: ActionContext, p: SilenceParams) -> Output:
    """Create a silence for the given matchers and duration; its comment names the run and step.

    Idempotent: a silence this step already created (found by its comment) is reused, not doubled."""
    client: AlertmanagerClient = ctx.need("alertmanager")
    now = ctx.clock.now()
    comment = f"{p.comment} ({ctx.origin})".strip()
    body = {
        "matchers": [
            {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
            for m in p.matchers
        ],
        "startsAt": iso(now),
        "endsAt": iso(now + p.duration),
        "createdBy": "runbookd",
        "comment": comment,
    }
    if ctx.dry_run:
        # A stand-in id, so that the undo (expire this silence) records its request too.
        stand_in = str(uuid.uuid5(uuid.NAMESPACE_URL, ctx.origin))
        request = {"method": "POST", "url": client.http.url("/api/v2/silences"), "body": body}
        return ctx.would(request, silence_id=stand_in, ends_at=body["endsAt"])
    for existing in await client.silences():
        state = (existing.get("status") or {}).get("state")
        # Exactly this step's own silence: "run R step silence" is a substring of "... step silence-2".
        mine = str(existing.get("comment", "")).endswith(f"({ctx.origin})")
        if state in ("active", "pending") and mine:
            return {
                "ok": True,
                "silence_id": existing["id"],
                "ends_at": existing.get("endsAt"),
                "reused": True,
            }
    silence_id = await client.create_silence(body)
    return {"ok": True, "silence_id": silence_id, "ends_at": body["endsAt"], "reused": False}


@action("alertmanager.expire_silence", read_only=False, idempotent=True)
async def expire_silence(ctx: ActionContext, p: ExpireParams) -> Output:
    """Expire a silence (for example the one an earlier step created) once the work is done."""
    client: AlertmanagerClient = ctx.need("alertmanager")
    if ctx.dry_run:
        return ctx.would({"method": "DELETE", "url": client.http.url(f"/api/v2/silence/{p.silence_id}")})
    found = await client.expire_silence(p.silence_id)
    return {"ok": True, "silence_id": p.silence_id, "was_known": found}


ACTIONS = [silence, expire_silence]
