"""Human-readable output for the CLI: plain aligned tables, no colours."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

_ENDED = frozenset({"succeeded", "failed", "rejected", "expired", "cancelled"})
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
"""Control characters (terminal escapes, carriage returns, newlines) and invisible formatting ones
(bidirectional overrides, zero-width spaces): what can make a terminal show text other than the text."""


def defang(value: Any) -> Any:
    """``value`` with every control or invisible formatting character in its strings written as
    ``\\uXXXX``. Alert labels are hostile input: ``\\r`` and ``ESC[2K`` in a target made ``runbookd
    runs`` show another target than the run's. Everything the human output shows goes through this."""
    if isinstance(value, str):
        return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {defang(k): defang(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [defang(v) for v in value]
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _wrapped(label: str, value: Any) -> list[str]:
    """`label  value`, the value whole (never cut), wrapped under itself to the terminal's width."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    width = max(60, shutil.get_terminal_size((110, 24)).columns)
    indent = " " * 10
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=f"{label:<10}",
        subsequent_indent=indent,
        break_on_hyphens=False,
        replace_whitespace=False,
        drop_whitespace=False,
    ) or [label]


def _current(run: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in run["steps"] if s["id"] == run.get("current_step")), None)


def run_state(run: dict[str, Any]) -> str:
    """The run's state as a person needs it: an approved step that has not started (paused, or the
    budget of mutating steps is full) is no longer waiting for anyone's approval."""
    current = _current(run)
    if run["state"] == "awaiting_approval" and current is not None and current["state"] == "approved":
        return "approved, waiting to start"
    return str(run["state"])


def step_state(run: dict[str, Any], step: dict[str, Any]) -> str:
    """A step still pending in a run that ended will never run: say so."""
    if step["state"] == "pending" and run["state"] in _ENDED:
        return "not run"
    return str(step["state"])


def runs_table(runs: list[dict[str, Any]]) -> str:
    runs = defang(runs)
    if not runs:
        return "no runs"
    rows = [
        (
            r["id"],
            r["runbook"],
            _short(r["target"], 40),
            run_state(r),
            r["current_step"] or "-",
            r["created_at"],
        )
        for r in runs
    ]
    return table(["RUN", "RUNBOOK", "TARGET", "STATE", "STEP", "CREATED"], rows)


def undo_text(undo: dict[str, Any]) -> str:
    """A step's undo, as approved with it."""
    undo = defang(undo)
    head = f"Undo (approved with this step; runs when the run ends): {undo['action']}"
    if undo.get("when"):
        head += f", once {undo['when']}"
        if undo.get("timeout"):
            head += f" (waits at most {undo['timeout']:g}s, then needs attention)"
    lines = [head] + ["  " + line for line in json.dumps(undo["with"], indent=2, sort_keys=True).splitlines()]
    if undo.get("deferred"):
        shown = ", ".join(".".join(str(p) for p in path) for path in undo["deferred"])
        lines.append(f"  ({shown}: rendered from this step's output when the undo runs)")
    return "\n".join(lines)


def run_details(run: dict[str, Any]) -> str:
    run = defang(run)
    out = [
        f"Run       {run['id']}",
        f"Runbook   {run['runbook']}",
        f"Target    {run['target']}",
        f"State     {run_state(run)}" + (f"  ({run['outcome']})" if run.get("outcome") else ""),
        f"Trigger   {run['trigger']}" + (f" by {run['requester']}" if run.get("requester") else ""),
        f"Dry run   {'yes: mutating steps only record their requests' if run['dry_run'] else 'no'}",
    ]
    current = _current(run)
    if run_state(run) != run["state"] and current is not None:
        out.append(f"          step {current['id']} is approved: it starts once runbookd is not paused and")
        out.append("          the budget of concurrent mutating steps has a free slot")
    if run.get("alert"):
        a = run["alert"]
        out += _wrapped(
            "Alert", f"{a.get('name')} ({a.get('status')}) {json.dumps(a.get('labels', {}), sort_keys=True)}"
        )
    out += _wrapped("Params", run["params"])
    out.append("")
    rows = []
    for s in run["steps"]:
        marker = "->" if s["id"] == run.get("current_step") and run["state"] not in ("succeeded",) else ""
        kind = "mutating" if s["mutating"] else "read-only"
        approvals = ",".join(a["by"] for a in s["approvals"]) or "-"
        rows.append(
            (marker, s["id"], s["action"], kind, step_state(run, s), approvals, s.get("deadline") or "")
        )
    out.append(table(["", "STEP", "ACTION", "KIND", "STATE", "APPROVED BY", "DEADLINE"], rows))
    undos = [(s["id"], s["undo"]) for s in run["steps"] if s.get("undo")]
    if undos:
        out += ["", "Undos (run when the run ends, latest step first):"]
        undo_rows = [
            (
                sid,
                u["action"],
                "not run" if u["state"] == "pending" and run["state"] in _ENDED else u["state"],
                u.get("when") or "-",
                _short(u.get("params") or u["with"], 60),
                u.get("error") or "",
            )
            for sid, u in undos
        ]
        out.append(table(["STEP", "UNDO", "STATE", "WHEN", "PARAMS", "ERROR"], undo_rows))
        if run.get("state") == "needs_attention":
            out += [
                f"Undo of {sid} failed: verify by hand, then `runbookd approve {run['id']} --step {sid}` "
                f"retries it (retry {u['retry_hash']}), or reject the run to close it."
                for sid, u in undos
                if u["state"] == "failed" and u.get("retry_hash")
            ]
    for s in run["steps"]:
        if s["id"] == run.get("current_step") and s["plan"] is not None and s["state"] == "awaiting_approval":
            out += ["", f"Awaiting approval: {s['id']} ({s['action']}), plan {s['plan_hash']}"]
            out += ["  " + line for line in json.dumps(s["plan"], indent=2, sort_keys=True).splitlines()]
            if s.get("undo"):
                out.append(undo_text(s["undo"]))
        if s.get("error"):
            out.append(f"\n{s['id']}: {s['error']}")
        if s.get("output") and s["state"] in ("succeeded", "failed"):
            out += _wrapped(f"{s['id']}:", s["output"])  # whole: dry-run requests included
    if run.get("timeline"):
        out += ["", "Timeline:"]
        for e in run["timeline"]:
            extra = {k: v for k, v in e.items() if k not in ("at", "event", "by")}
            out.append(
                f"  {e['at']}  {e['by']:<16} {e['event']:<20} {_short(extra, 100) if extra else ''}".rstrip()
            )
    return "\n".join(out)


def checks_table(checks: list[dict[str, Any]]) -> str:
    checks = defang(checks)
    if not checks:
        return "no scheduled checks"
    rows = [
        (
            c["runbook"],
            c["schedule"],
            c["last_fire"] or "never",
            c["outcome"] or "-",
            "-" if c["findings"] is None else c["findings"],
            _short(c["message"] or "", 80),
        )
        for c in checks
    ]
    return table(["RUNBOOK", "SCHEDULE", "LAST FIRE", "OUTCOME", "FINDINGS", "MESSAGE"], rows)
