"""What runbookd answers a person in Slack: ``/runbook`` results, refusals and the reject dialog.

Answers are ephemeral (only the asker sees them) unless they change something; those go ``in_channel``.
Every answer is a ``response_url`` body: ``{"response_type", "text", "blocks"}``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from daemon.notify.slack_messages import Message, esc, run_message, safe, waiting_step, who

REJECT_VIEW = "runbookd.reject_reason"
"""callback_id of the dialog that asks for a rejection reason."""
REASON_BLOCK = "reason"
REASON_MAX = 1000

Answer = dict[str, Any]

HELP = """*`/runbook`*: runbookd's runs from Slack.
`/runbook list`: runs waiting for a person
`/runbook show RUN_ID`: a run's steps, the step awaiting approval and its parameters
`/runbook approve RUN_ID [STEP]`: approve the step a run waits on (its current plan, as `show` prints it)
`/runbook reject RUN_ID REASON`: end a run, with the reason
`/runbook pause` / `/runbook resume`: stop / allow new steps from starting (a kill switch)
`/runbook help`: this text"""


def answer(text: str, blocks: list[dict[str, Any]] | None = None, *, public: bool = False) -> Answer:
    kind: Literal["in_channel", "ephemeral"] = "in_channel" if public else "ephemeral"
    body: Answer = {"response_type": kind, "text": text}
    if blocks:
        body["blocks"] = blocks
    return body


def help_text() -> Answer:
    return answer(HELP)


def usage(problem: str) -> Answer:
    return answer(f"{esc(problem)}\n\n{HELP}")


def not_allowed(user_id: str) -> Answer:
    return answer(
        f":no_entry: Not allowed: {who('slack:' + user_id)} is in no approver group of runbookd "
        f"(an operator adds `slack:{esc(user_id)}` to a group under `approvers:` in its config). Nothing changed."
    )


def nothing_changed(reason: str) -> Answer:
    return answer(f":warning: Nothing changed: {safe(reason, 2000)}")


def failed(problem: str) -> Answer:
    return answer(f":x: {safe(problem, 2000)}")


def run_list(runs: list[dict[str, Any]], limit: int = 25) -> Answer:
    if not runs:
        return answer("No run is waiting for a person.")
    lines = []
    for run in runs[:limit]:
        step = waiting_step(run)
        waits = f" · step `{safe(step['id'], 64)}` ({safe(step['action'], 64)})" if step else ""
        lines.append(
            f"`{safe(run['id'], 64)}` {safe(run['runbook'], 80)} on {safe(run['target'], 120)}: "
            f"{safe(run['state'], 30)}{waits}"
        )
    more = f"\n… and {len(runs) - limit} more" if len(runs) > limit else ""
    return answer(f"*Runs waiting for a person ({len(runs)})*\n" + "\n".join(lines) + more)


def show(run: dict[str, Any], public_url: str | None) -> Answer:
    msg: Message = run_message(run, public_url)
    return answer(msg.text, msg.blocks)


def approved(run: dict[str, Any], step_id: str, identity: str) -> Answer:
    step = next((s for s in run["steps"] if s["id"] == step_id), None)
    what = f" ({safe(step['action'], 64)}, plan `{safe(step['plan_hash'], 64)}`)" if step else ""
    return answer(
        f":+1: {who(identity)} approved step `{safe(step_id, 64)}`{what} of run `{safe(run['id'], 64)}` "
        f"({safe(run['runbook'], 80)} on {safe(run['target'], 120)}); the run is {safe(run['state'], 30)}.",
        public=True,
    )


def rejected(run: dict[str, Any], identity: str, reason: str) -> Answer:
    return answer(
        f":no_entry: {who(identity)} rejected run `{safe(run['id'], 64)}` ({safe(run['runbook'], 80)} on "
        f"{safe(run['target'], 120)}): {safe(reason, REASON_MAX)}",
        public=True,
    )


def paused(state: dict[str, Any], identity: str) -> Answer:
    if state.get("paused"):
        return answer(
            f":double_vertical_bar: {who(identity)} paused runbookd: no new step will start.", public=True
        )
    return answer(f":arrow_forward: {who(identity)} resumed runbookd: approved steps may start.", public=True)


def reject_dialog(run: dict[str, Any], step_id: str, response_url: str) -> dict[str, Any]:
    """The modal a Reject click opens. ``private_metadata`` (returned as-is by Slack with the submission)
    carries the run and where to answer."""
    meta = json.dumps(
        {"run": run["id"], "step": step_id, "response_url": response_url}, separators=(",", ":")
    )
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": meta,
        "title": {"type": "plain_text", "text": "Reject this run"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"Rejecting ends run `{safe(run['id'], 64)}` ({safe(run['runbook'], 80)} on "
                    f"{safe(run['target'], 120)}); nothing more of it runs.",
                },
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_BLOCK,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": REASON_MAX,
                },
            },
        ],
    }
