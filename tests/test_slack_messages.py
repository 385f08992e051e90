"""What runbookd posts to Slack for a run: the approval request, the thread, and nothing secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.slack_api import (
    BOT_TOKEN,
    RUNBOOKS,
    SECRETS,
    elements,
    serve_slack,
    start_run,
    text_of,
)

from daemon.notify import slack_messages as msgs


async def test_approval_request_shows_alert_step_params_and_buttons(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd, job="node", instance="10.0.0.7:9100")
        posts = sd.slack.calls_of("chat.postMessage")
        assert len(posts) == 1 and posts[0].params["channel"] == "#ops-approvals"
        top = sd.top()
        assert top["channel"] == sd.slack.channel_ids["#ops-approvals"]
        text = text_of(top)
        for expected in (
            "scrape-fix: node",  # runbook and target
            "`PrometheusScrapeFailure` (warning, firing)",  # alert name, severity, status
            ">test",  # the alert's summary annotation
            "`instance=10.0.0.7:9100`",
            "`job=node`",
            "<http://127.0.0.1:9090/graph|Source query>",  # the generator URL
            "Step `look` awaits approval",
            "`notify.log` (read-only)",
            '\\"message\\": \\"looking at node\\"',  # the rendered params, exactly as they will run
            "Say in the timeline what runbookd is looking at.",
            run["steps"][0]["plan_hash"],
            "Dry run",
        ):
            assert expected in text, expected
        assert "<!date^" in text  # the deadline, shown in each reader's time zone

        buttons = elements(top)
        assert set(buttons) == {msgs.APPROVE, msgs.REJECT, msgs.OPEN}
        value = json.loads(buttons[msgs.APPROVE]["value"])
        assert value == {"run": run["id"], "step": "look", "plan_hash": run["steps"][0]["plan_hash"]}
        assert buttons[msgs.REJECT]["value"] == buttons[msgs.APPROVE]["value"]
        assert "confirm" not in buttons[msgs.APPROVE]  # read-only: no "are you sure?"
        assert buttons[msgs.OPEN]["url"] == f"https://runbookd.example.test/api/v1/runs/{run['id']}"

        # the bot token goes in the Authorization header, and nowhere else
        assert {c.authorization for c in sd.slack.calls} == {f"Bearer {BOT_TOKEN}"}
        sent = sd.slack.everything_sent()
        assert not [s for s in SECRETS if s in sent]


async def test_later_steps_results_and_dry_run_in_the_thread(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        assert (await sd.d.approve(run["id"], "look", who="alice"))[0] == 200
        await sd.settle()
        top = sd.top()
        replies = sd.slack.replies(top["ts"])
        assert [r["text"] for r in replies] == [
            "scrape-fix: step look succeeded",
            "scrape-fix: step silence awaits approval",
        ]
        result, request = replies
        assert "looking at node" in text_of(result)  # the step's output
        assert request.get("reply_broadcast") is True  # a new approval shows in the channel too
        assert "alertmanager.silence" in text_of(request)

        text = text_of(top)  # the top message follows the run
        assert ":white_check_mark: `look` notify.log: succeeded (approved by alice)" in text
        assert "Step `silence` awaits approval" in text
        assert "`alertmanager.silence` (mutating)" in text
        assert "*DRY RUN*: this step only records the requests it would send" in text
        assert '\\"name\\": \\"job\\"' in text and '\\"duration\\": \\"1h\\"' in text
        approve = elements(top)[msgs.APPROVE]
        assert json.loads(approve["value"])["step"] == "silence"
        assert approve["confirm"]["text"]["text"] == "alertmanager.silence on node"  # a change asks first

        assert (await sd.d.approve(run["id"], "silence", who="bob"))[0] == 200
        await sd.settle()
        top = sd.top()
        assert elements(top) == {}  # finished: the buttons are gone
        assert ":white_check_mark: *succeeded*: all 2 steps done" in text_of(top)
        texts = [r["text"] for r in sd.slack.replies(top["ts"])]
        assert texts[-2:] == ["scrape-fix: step silence succeeded", "scrape-fix: run succeeded"]
        dry = text_of(sd.slack.replies(top["ts"])[-2])
        assert '\\"dry_run\\": true' in dry and "/api/v2/silences" in dry  # the request it would have sent
        assert not [s for s in SECRETS if s in sd.slack.everything_sent()]


async def test_untrusted_labels_cannot_ping_or_link(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        await start_run(sd, job="node", team="<!channel> <https://evil.example|click me> & co")
        sent = sd.slack.everything_sent()
        assert "<!channel>" not in sent and "<https://evil.example" not in sent
        assert "&lt;!channel&gt; &lt;https://evil.example|click me&gt; &amp; co" in text_of(sd.top())


async def test_runbook_channel_override(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS, channels={"scrape-fix": "#team-node"}) as sd:
        await start_run(sd)
        assert [c.params["channel"] for c in sd.slack.calls_of("chat.postMessage")] == ["#team-node"]


def _view(**step: Any) -> dict[str, Any]:
    base_step = {
        "id": "dump",
        "action": "notify.log",
        "description": "",
        "state": "succeeded",
        "mutating": False,
        "plan": {"message": "x"},
        "plan_hash": "abc",
        "deadline": None,
        "approvals": [],
        "output": None,
        "error": None,
    }
    return {
        "id": "r1",
        "runbook": "rb",
        "target": "t",
        "state": "succeeded",
        "trigger": "manual",
        "requester": "admin",
        "dry_run": False,
        "alert": None,
        "outcome": "done",
        "current_step": None,
        "created_at": "2027-01-15T08:00:00Z",
        "approval": {"min_approvers": 1},
        "steps": [{**base_step, **step}],
    }


def test_long_outputs_and_params_are_truncated_within_slack_limits() -> None:
    run = _view(output={"lines": ["<&>" * 50] * 400}, error="e" * 5000)
    reply = msgs.step_result_reply(run, run["steps"][0])
    for block in reply.blocks:
        assert len(block["text"]["text"]) <= 3000
    text = text_of({"blocks": reply.blocks})
    assert "more characters)" in text
    assert "&lt;&amp;&gt;" in text and "<&>" not in text

    waiting = _view(state="awaiting_approval", plan={"query": "x" * 10_000}, deadline="2027-01-15T08:30:00Z")
    waiting.update(state="awaiting_approval", current_step="dump", outcome=None)
    top = msgs.run_message(waiting)
    assert len(json.dumps(top.blocks)) < 12_000
    assert all(len(b["text"]["text"]) <= 3000 for b in top.blocks if b["type"] == "section")
    assert msgs.APPROVE in elements({"blocks": top.blocks})
    assert msgs.OPEN not in elements({"blocks": top.blocks})  # no public_url: no link


def test_code_blocks_cannot_be_closed_by_the_content() -> None:
    block = msgs.code("a ``` b")
    assert block.startswith("```") and block.endswith("```") and block.count("```") == 2
