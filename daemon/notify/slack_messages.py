"""Block Kit for a run's Slack thread: the top message (always the run's current state, with the buttons
while a step awaits approval) and the replies under it.

Pure functions of the run view (``daemon.engine.views``), which holds no secrets. Alert labels, params and
outputs are untrusted text: all of it is escaped (so a label cannot ping ``<!channel>`` or forge a link)
and truncated to stay inside Slack's limits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from daemon.kits import strictjson
from daemon.kits.clock import parse_iso

APPROVE = "runbookd.approve"
REJECT = "runbookd.reject"
OPEN = "runbookd.open"
"""action_ids of the top message's buttons (the link button's clicks are acknowledged and ignored)."""

SECTION_LIMIT = 2900
"""A section's text may hold 3000 characters."""
CODE_LIMIT = 1500
"""Params or an output shown in one code block; the rest is in the API."""

_RUN_ICON = {
    "awaiting_approval": ":hourglass_flowing_sand:",
    "running": ":gear:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "rejected": ":no_entry:",
    "expired": ":alarm_clock:",
    "cancelled": ":heavy_minus_sign:",
    "needs_attention": ":warning:",
    "undoing": ":leftwards_arrow_with_hook:",
}
_STEP_ICON = {
    "pending": ":white_circle:",
    "awaiting_approval": ":hourglass_flowing_sand:",
    "approved": ":ballot_box_with_check:",
    "running": ":gear:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "skipped": ":fast_forward:",
    "rejected": ":no_entry:",
    "expired": ":alarm_clock:",
}
_QUIET_LABELS = {"alertname", "severity", "prometheus", "prometheus_replica", "receive", "tenant_id"}
_SLACK_USER = re.compile(r"^slack:([A-Z0-9]{2,32})$")


@dataclass(frozen=True)
class Message:
    text: str
    """Notification and fallback text."""
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ButtonValue:
    """What an Approve/Reject button carries: the step and the plan the person saw."""

    run: str
    step: str
    plan_hash: str

    def encode(self) -> str:
        return json.dumps(
            {"run": self.run, "step": self.step, "plan_hash": self.plan_hash}, separators=(",", ":")
        )

    @classmethod
    def decode(cls, value: object) -> ButtonValue:
        """Raises ValueError unless ``value`` is a button value this module made."""
        data = strictjson.loads(value) if isinstance(value, str) and len(value) <= 2000 else None
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("run", "step", "plan_hash")
        ):
            raise ValueError("not a runbookd button value")
        return cls(data["run"], data["step"], data["plan_hash"])


# ---------------------------------------------------------------- text helpers


def esc(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as markup (mentions, links)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut escaped text to ``limit`` characters without splitting an entity, saying how much was cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 40, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return f"{cut}… ({len(text) - len(cut)} more characters)"


def safe(text: object, limit: int = 300) -> str:
    return clip(esc(text), limit)


def code(value: Any, limit: int = CODE_LIMIT) -> str:
    """A code block of ``value`` (JSON, keys sorted) as runbookd holds it; never breaks out of the fence."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, default=str)
    return "```" + clip(esc(text), limit).replace("```", "`\u200b``") + "```"


def who(identity: str) -> str:
    """A Slack user as a mention, anyone else (token names) as plain text."""
    m = _SLACK_USER.fullmatch(identity)
    return f"<@{m.group(1)}>" if m else esc(identity)


def when(iso_time: str | None) -> str:
    """A time in each reader's own time zone, with the UTC time as fallback."""
    if not iso_time:
        return "no deadline"
    try:
        ts = int(parse_iso(iso_time))
    except ValueError:
        return esc(iso_time)
    return f"<!date^{ts}^{{date_short_pretty}} {{time}}|{esc(iso_time)}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}]}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {
        "type": "plain_text",
        "text": text if len(text) <= limit else text[: limit - 1] + "…",
        "emoji": True,
    }


def run_link(run: dict[str, Any], public_url: str | None) -> str | None:
    return f"{public_url.rstrip('/')}/api/v1/runs/{run['id']}" if public_url else None


def waiting_step(run: dict[str, Any]) -> dict[str, Any] | None:
    """The step a person can act on now, if any."""
    if run["state"] not in ("awaiting_approval", "needs_attention"):
        return None
    steps: list[dict[str, Any]] = run["steps"]
    return next(
        (s for s in steps if s["id"] == run.get("current_step") and s["state"] == "awaiting_approval"), None
    )


# ---------------------------------------------------------------- the top message


def _alert_block(run: dict[str, Any]) -> dict[str, Any]:
    alert = run.get("alert")
    if not alert:
        by = f" by {who(run['requester'])}" if run.get("requester") else ""
        return _section(f"*Trigger* {esc(run['trigger'])}{by}")
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    severity = labels.get("severity", "no severity")
    lines = [
        f"*Alert* `{safe(alert.get('name'), 150)}` ({safe(severity, 40)}, {safe(alert.get('status'), 20)})"
    ]
    summary = annotations.get("summary") or annotations.get("description")
    if summary:
        lines.append(f">{safe(summary, 500)}")
    shown = [f"`{safe(k, 60)}={safe(v, 100)}`" for k, v in sorted(labels.items()) if k not in _QUIET_LABELS]
    if shown:
        lines.append(" ".join(shown[:15]) + (f" (+{len(shown) - 15} more)" if len(shown) > 15 else ""))
    url = alert.get("generatorURL")
    if isinstance(url, str) and url.startswith(("http://", "https://")) and "|" not in url:
        lines.append(f"<{esc(url)}|Source query>")
    if run.get("alert_resolved"):
        lines.append("_The alert has resolved since._")
    return _section("\n".join(lines))


def _step_line(step: dict[str, Any]) -> str:
    icon = _STEP_ICON.get(step["state"], ":grey_question:")
    line = f"{icon} `{safe(step['id'], 64)}` {safe(step['action'], 64)}: {safe(step['state'], 30)}"
    if step["approvals"]:
        line += " (approved by " + ", ".join(who(a["by"]) for a in step["approvals"]) + ")"
    if step.get("error") and step["state"] in ("failed", "awaiting_approval"):
        line += f": {safe(step['error'], 200)}"
    undo = step.get("undo")
    if undo and undo["state"] not in ("pending", "planned", "skipped"):
        line += f"\n      undo {safe(undo['action'], 64)}: {safe(undo['state'], 30)}"
        if undo.get("error"):
            line += f": {safe(undo['error'], 200)}"
    return line


def step_request(run: dict[str, Any], step: dict[str, Any]) -> list[dict[str, Any]]:
    """The step awaiting approval: action, params exactly as they will run, deadline, plan hash."""
    kind = "mutating" if step["mutating"] else "read-only"
    head = f"*Step `{safe(step['id'], 64)}` awaits approval:* `{safe(step['action'], 64)}` ({kind})"
    if run["dry_run"] and step["mutating"]:
        head += (
            "\n:test_tube: *DRY RUN*: this step only records the requests it would send; it changes nothing."
        )
    if step.get("description"):
        head += f"\n{safe(step['description'], 500)}"
    if step.get("error"):
        head += f"\n:warning: {safe(step['error'], 500)}"
    needed = int(run.get("approval", {}).get("min_approvers", 1))
    approvals = len(step["approvals"])
    facts = (
        f"Deadline {when(step.get('deadline'))} · plan `{safe(step.get('plan_hash'), 64)}` · "
        f"approvals {approvals} of {needed}"
    )
    blocks = [_section(head), _section("Parameters, as they will run:\n" + code(step["plan"]))]
    undo = step.get("undo")
    if undo:
        once = f", once `{safe(undo.get('when'), 300)}`" if undo.get("when") else ""
        text = (
            f"*Undo, approved with this step:* `{safe(undo['action'], 64)}` runs when the run ends "
            f"(whatever the end){once}, without asking again:\n" + code(undo["with"])
        )
        if undo.get("deferred"):
            text += "\n_Values that read this step's output are filled in when the undo runs._"
        blocks.append(_section(text))
    return [*blocks, _context(facts)]


def _buttons(run: dict[str, Any], step: dict[str, Any], public_url: str | None) -> dict[str, Any]:
    value = ButtonValue(run["id"], step["id"], step["plan_hash"] or "").encode()
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": APPROVE,
        "text": _plain(f"Approve {step['id']}", 75),
        "style": "primary",
        "value": value,
    }
    if step["mutating"]:
        approve["confirm"] = {
            "title": _plain("Approve a change?", 100),
            "text": {"type": "plain_text", "text": f"{step['action']} on {run['target']}"[:300]},
            "confirm": _plain("Approve", 30),
            "deny": _plain("Cancel", 30),
        }
    reject = {
        "type": "button",
        "action_id": REJECT,
        "text": _plain("Reject", 75),
        "style": "danger",
        "value": value,
    }
    elements = [approve, reject]
    link = run_link(run, public_url)
    if link:
        elements.append(
            {"type": "button", "action_id": OPEN, "text": _plain("Open in the API", 75), "url": link}
        )
    return {"type": "actions", "block_id": "runbookd.decide", "elements": elements}


def run_message(run: dict[str, Any], public_url: str | None = None) -> Message:
    """The top message of a run's thread: its current state, with buttons only while a step awaits a person."""
    state = run["state"]
    headline = f"{_RUN_ICON.get(state, '')} *{state.replace('_', ' ')}*"
    if run.get("outcome"):
        headline += f": {safe(run['outcome'], 1000)}"
    if run["dry_run"]:
        headline += "\n:test_tube: *Dry run*: mutating steps only record the requests they would send."
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{run['runbook']}: {run['target']}", 150)},
        _section(headline),
        _alert_block(run),
        _section("*Steps*\n" + "\n".join(_step_line(s) for s in run["steps"][:40])),
    ]
    step = waiting_step(run)
    if step is not None and step.get("plan") is not None:
        blocks += step_request(run, step)
        blocks.append(_buttons(run, step, public_url))
    link = run_link(run, public_url)
    footer = f"run `{safe(run['id'], 64)}` · started {when(run['created_at'])} ({safe(run['trigger'], 20)})"
    if link and step is None:
        footer += f" · <{esc(link)}|open in the API>"
    blocks.append(_context(footer))
    waiting = f": step {step['id']} awaits approval" if step else ""
    # The notification text is mrkdwn too, and the target comes from alert labels: escape it like the blocks.
    return Message(safe(f"runbookd {run['runbook']} on {run['target']}: {state}{waiting}", 300), blocks)


# ---------------------------------------------------------------- replies in the thread


def approval_reply(run: dict[str, Any], step: dict[str, Any]) -> Message:
    blocks = step_request(run, step)
    blocks.append(
        _context(
            "Approve or reject with the buttons on the first message of this thread, or "
            f"`/runbook approve {safe(run['id'], 64)} {safe(step['id'], 64)}`."
        )
    )
    return Message(f"{run['runbook']}: step {step['id']} awaits approval", blocks)


def step_result_reply(run: dict[str, Any], step: dict[str, Any]) -> Message:
    icon = _STEP_ICON.get(step["state"], "")
    text = f"{icon} Step `{safe(step['id'], 64)}` ({safe(step['action'], 64)}) {safe(step['state'], 30)}"
    if step.get("error"):
        text += f": {safe(step['error'], 1000)}"
    blocks = [_section(text)]
    if step.get("output"):
        blocks.append(_section("Output:\n" + code(step["output"])))
    return Message(f"{run['runbook']}: step {step['id']} {step['state']}", blocks)


def outcome_reply(run: dict[str, Any]) -> Message:
    icon = _RUN_ICON.get(run["state"], "")
    text = f"{icon} Run {safe(run['state'], 30)}: {safe(run.get('outcome') or 'ended', 1500)}"
    return Message(f"{run['runbook']}: run {run['state']}", [_section(text)])


def attention_reply(run: dict[str, Any], step: dict[str, Any]) -> Message:
    undo = step.get("undo") or {}
    if undo.get("state") == "failed":
        text = (
            f":warning: The undo of step `{safe(step['id'], 64)}` ({safe(undo.get('action'), 64)}) did not "
            f"complete: {safe(undo.get('error') or '', 1000)}\nVerify by hand, then approve the step to retry "
            f"its undo (retry `{safe(undo.get('retry_hash'), 64)}`), or reject to close the run."
        )
        return Message(f"{run['runbook']}: run needs attention", [_section(text)])
    text = (
        f":warning: Step `{safe(step['id'], 64)}` needs a person: {safe(step.get('error') or '', 1000)}\n"
        "Approve to run it again, or reject to end the run."
    )
    return Message(f"{run['runbook']}: run needs attention", [_section(text)])


def reminder_reply(run: dict[str, Any], step: dict[str, Any]) -> Message:
    text = (
        f":alarm_clock: Step `{safe(step['id'], 64)}` still awaits approval; the run expires "
        f"{when(step.get('deadline'))} unless someone approves it."
    )
    return Message(f"{run['runbook']}: step {step['id']} expires soon", [_section(text)])


def approved_note(run: dict[str, Any], step_id: str, identity: str) -> Message:
    step = next((s for s in run["steps"] if s["id"] == step_id), None)
    count = len(step["approvals"]) if step else 1
    needed = int(run.get("approval", {}).get("min_approvers", 1))
    text = f":+1: {who(identity)} approved step `{safe(step_id, 64)}` ({count} of {needed})"
    return Message(f"{identity} approved step {step_id}", [_section(text)])
