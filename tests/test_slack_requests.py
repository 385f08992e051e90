"""Requests from Slack: signature checks first, then clicks and /runbook under the engine's approval rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import rawhttp
from support.inproc import alert_payload
from support.slack_api import (
    ALICE,
    BOB,
    CAROL,
    EVE,
    RUNBOOKS,
    SlackDaemon,
    click,
    command_body,
    elements,
    interaction_body,
    serve_slack,
    signed_headers,
    start_run,
    submission,
    text_of,
)

from daemon.notify import slack_messages as msgs

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL


def approve_value(sd: SlackDaemon) -> str:
    return str(elements(sd.top())[msgs.APPROVE]["value"])


async def unchanged(sd: SlackDaemon, run: dict[str, Any]) -> None:
    """Nothing about the run moved: same state, same step, no approvals."""
    now = await sd.d.run(run["id"])
    assert (now["state"], now["current_step"]) == (run["state"], run["current_step"])
    assert [s["approvals"] for s in now["steps"]] == [s["approvals"] for s in run["steps"]]


# ---------------------------------------------------------------- signatures


async def test_forged_unsigned_replayed_and_altered_requests_get_401(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        url = sd.slack.response_url()
        body = interaction_body(click(ALICE, msgs.APPROVE, approve_value(sd), url))
        now = int(sd.d.clock.now())
        forged = signed_headers(body, now, secret="not-the-signing-secret")
        altered = body.replace(ALICE.encode(), BOB.encode())
        no_timestamp = {
            k: v for k, v in signed_headers(body, now).items() if k != "X-Slack-Request-Timestamp"
        }
        bad_timestamp = {**signed_headers(body, now), "X-Slack-Request-Timestamp": "soon"}
        attempts: list[tuple[str, bytes, dict[str, str] | None, int | None]] = [
            ("forged", body, forged, None),
            ("unsigned", body, {"Content-Type": "application/x-www-form-urlencoded"}, None),
            ("no timestamp", body, no_timestamp, None),
            ("non-integer timestamp", body, bad_timestamp, None),
            ("replayed 301 s later", body, None, now - 301),
            ("signed 301 s ahead", body, None, now + 301),
            ("altered after signing", altered, signed_headers(body, now), None),
        ]
        for path in ("/slack/interactions", "/slack/commands"):
            for what, sent, headers, timestamp in attempts:
                status, text = await sd.post(path, sent, headers=headers, timestamp=timestamp)
                assert status == 401, (path, what, status, text)
                assert "Slack signature" in json.loads(text)["error"]
        await sd.settle()
        await unchanged(sd, run)
        assert sd.slack.answers == [] and sd.slack.calls_of("views.open") == []

        # the same click inside the window is accepted
        status, _ = await sd.post("/slack/interactions", body, timestamp=now - 299)
        assert status == 200
        await sd.settle()
        assert (await sd.d.run(run["id"]))["steps"][0]["approvals"][0]["by"] == f"slack:{ALICE}"


async def test_signed_but_malformed_requests_get_400(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        url = sd.slack.response_url()
        good = click(ALICE, msgs.APPROVE, approve_value(sd), url)
        bodies = [
            b"payload=%7Bnot+json",
            b"nothing=here",
            interaction_body({**good, "user": {"id": "<script>"}}),
            interaction_body({**good, "actions": []}),
            interaction_body({**good, "response_url": "file:///etc/passwd"}),
            interaction_body({**good, "actions": [{**good["actions"][0], "value": "run-1"}]}),
        ]
        for body in bodies:
            status, text = await sd.post("/slack/interactions", body)
            assert status == 400, (body, status, text)
        status, _ = await sd.post("/slack/commands", command_body("list", "", url))
        assert status == 400
        # An adversarial pass: a repeated field (the command ran as the last user_id, the last text), a
        # %-escape that is not UTF-8 (made U+FFFD), a repeated name in the payload's JSON.
        paused = command_body("help", ALICE, url) + b"&text=pause"
        someone = command_body("pause", "UNOBODY1", url) + b"&user_id=" + ALICE.encode()
        not_utf8 = command_body("show", ALICE, url).replace(b"text=show", b"text=show%20%ff%fe")
        twice = interaction_body(good)[:-3] + b"%2C+%22type%22%3A+%22block_actions%22%7D"
        assert twice.endswith(b"%22type%22%3A+%22block_actions%22%7D")
        for path, body in [
            ("/slack/commands", paused),
            ("/slack/commands", someone),
            ("/slack/commands", not_utf8),
            ("/slack/interactions", twice),
        ]:
            status, text = await sd.post(path, body)
            assert status == 400, (body, status, text)
        assert not await sd.d.engine.is_paused()
        await sd.settle()
        await unchanged(sd, run)


async def test_expect_100_continue_is_refused_without_signature_headers(tmp_path: Path) -> None:
    """Slack never sends Expect; an unsigned sender is not invited to upload its body."""
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        for path in ("/slack/commands", "/slack/interactions"):
            head = rawhttp.head("POST", path, {"Expect": "100-continue", "Content-Length": "1000"})
            reader, writer = await rawhttp.open_partial(sd.d.url, head)
            try:
                answer = await rawhttp.read_answer(reader, timeout=5)
            finally:
                writer.close()
            assert answer.status == 401 and b"Slack signature" in answer.body, (path, answer)


# ---------------------------------------------------------------- buttons


async def test_approve_by_button(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        status, url = await sd.click(ALICE, msgs.APPROVE, approve_value(sd))
        assert status == 200
        assert sd.slack.answers_to(url) == []  # nothing to complain about: the thread says it
        run = await sd.d.run(run["id"])
        assert run["steps"][0]["state"] == "succeeded"
        assert run["steps"][0]["approvals"][0] | {"at": None} == {
            "by": f"slack:{ALICE}",
            "via": "slack",
            "at": None,
            "plan_hash": run["steps"][0]["plan_hash"],
        }
        notes = [r["text"] for r in sd.slack.replies(sd.top()["ts"])]
        assert notes[0] == f"slack:{ALICE} approved step look"
        assert f"<@{ALICE}> approved step `look` (1 of 1)" in text_of(sd.slack.replies(sd.top()["ts"])[0])


async def test_reject_by_button_asks_for_a_reason(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        status, url = await sd.click(BOB, msgs.REJECT, approve_value(sd))
        assert status == 200
        (opened,) = sd.slack.calls_of("views.open")
        view = opened.params["view"]
        assert opened.params["trigger_id"] == "1234.5678.trigger"
        assert view["callback_id"] == "runbookd.reject_reason"
        await unchanged(sd, run)  # the dialog alone changes nothing

        # an empty reason is refused inside the dialog
        status, text = await sd.post(
            "/slack/interactions", interaction_body(submission(BOB, view["private_metadata"], "  "))
        )
        assert status == 200 and json.loads(text)["response_action"] == "errors"
        await unchanged(sd, run)

        body = interaction_body(submission(BOB, view["private_metadata"], "wrong job, this is the DB"))
        status, text = await sd.post("/slack/interactions", body)
        assert status == 200 and text == ""  # closes the dialog
        await sd.settle()
        run = await sd.d.run(run["id"])
        assert run["state"] == "rejected"
        assert run["outcome"] == f"rejected by slack:{BOB}: wrong job, this is the DB"
        top = sd.top()
        assert elements(top) == {}
        assert "wrong job, this is the DB" in text_of(top)
        assert sd.slack.replies(top["ts"])[-1]["text"] == "scrape-fix: run rejected"
        assert sd.slack.answers_to(url) == []  # the thread says it (above)


async def test_unknown_user_is_not_allowed_and_nothing_changes(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        value = approve_value(sd)
        updates = len(sd.slack.calls_of("chat.update"))
        for action in (msgs.APPROVE, msgs.REJECT):
            status, url = await sd.click(EVE, action, value)
            assert status == 200
            (answer,) = sd.slack.answers_to(url)
            assert answer["response_type"] == "ephemeral"
            assert answer["text"].startswith(":no_entry: Not allowed:") and f"slack:{EVE}" in answer["text"]
        status, text, url = await sd.command(f"approve {run['id']}", EVE)
        assert status == 200 and "Not allowed" in json.loads(text)["text"]
        await unchanged(sd, run)
        assert sd.slack.calls_of("views.open") == []
        assert len(sd.slack.calls_of("chat.update")) == updates

        # in an approver group, but not one this runbook accepts: the engine's rule, said as it is
        status, url = await sd.click(CAROL, msgs.APPROVE, value)
        (answer,) = sd.slack.answers_to(url)
        assert (
            "Nothing changed" in answer["text"]
            and "not in an approver group of runbook scrape-fix" in answer["text"]
        )
        await unchanged(sd, run)


async def test_stale_clicks_change_nothing_and_say_why(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd, job="node")
        value = approve_value(sd)
        sd.d.clock.advance(31 * 60)
        await sd.d.engine.tick()
        await sd.settle()
        assert elements(sd.top()) == {}  # expired: buttons gone
        status, url = await sd.click(ALICE, msgs.APPROVE, value)
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "ephemeral"
        assert f"Nothing changed: run {run['id']} is expired" in answer["text"]
        status, url = await sd.click(ALICE, msgs.REJECT, value)
        (answer,) = sd.slack.answers_to(url)
        assert f"run {run['id']} is already expired" in answer["text"]
        assert sd.slack.calls_of("views.open") == []
        assert (await sd.d.run(run["id"]))["state"] == "expired"

    (tmp_path / "again").mkdir()
    async with serve_slack(tmp_path / "again", RUNBOOKS) as sd:
        run = await start_run(sd, job="db")
        old = approve_value(sd)
        await sd.click(ALICE, msgs.APPROVE, old)  # step 1 done; the run moved on
        status, url = await sd.click(BOB, msgs.APPROVE, old)  # a second click on the old button
        (answer,) = sd.slack.answers_to(url)
        assert "Nothing changed: step look is succeeded; the run is at step silence" in answer["text"]
        status, _ = await sd.d.call("POST", f"/api/v1/runs/{run['id']}/reject", json={"reason": "no"})
        assert status == 200
        await sd.settle()
        status, url = await sd.click(BOB, msgs.APPROVE, approve_value(sd) if elements(sd.top()) else old)
        (answer,) = sd.slack.answers_to(url)
        assert f"run {run['id']} is rejected: rejected by admin: no" in answer["text"]


async def test_a_changed_plan_is_not_approved(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        value = json.loads(approve_value(sd))
        stale = msgs.ButtonValue(value["run"], value["step"], "0000000000000000").encode()
        _, url = await sd.click(ALICE, msgs.APPROVE, stale)
        (answer,) = sd.slack.answers_to(url)
        assert "changed since you saw it" in answer["text"]
        await unchanged(sd, run)


# ---------------------------------------------------------------- /runbook


async def test_approve_and_reject_by_command(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        status, text, url = await sd.command(f"approve {run['id']}", ALICE)
        assert (status, text) == (200, "")  # acknowledged at once; the answer follows
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "in_channel"  # it changed a run: everyone sees it
        assert f"<@{ALICE}> approved step `look`" in answer["text"]
        run = await sd.d.run(run["id"])
        assert run["current_step"] == "silence" and run["steps"][0]["approvals"][0]["via"] == "slack"

        status, text, url = await sd.command(f"approve {run['id']} look", ALICE)
        (answer,) = sd.slack.answers_to(url)
        assert (
            answer["response_type"] == "ephemeral"
            and "Nothing changed: step look is succeeded" in answer["text"]
        )

        # "approve RUN" never approves a mutating step unseen: it must be named
        status, text, url = await sd.command(f"approve {run['id']}", ALICE)
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "ephemeral"
        assert f"/runbook approve {run['id']} silence" in answer["text"]
        assert (await sd.d.run(run["id"]))["steps"][1]["approvals"] == []

        status, text, url = await sd.command(f"reject {run['id']}   silence is not enough here", BOB)
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "in_channel" and "silence is not enough here" in answer["text"]
        run = await sd.d.run(run["id"])
        assert (
            run["state"] == "rejected"
            and run["outcome"] == f"rejected by slack:{BOB}: silence is not enough here"
        )
        assert elements(sd.top()) == {}


async def test_read_commands_are_ephemeral(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        status, text, url = await sd.command("help", EVE)  # help is for everyone, at once
        assert status == 200 and "/runbook approve RUN_ID [STEP]" in json.loads(text)["text"]
        status, text, _ = await sd.command("", ALICE)
        assert "/runbook list" in json.loads(text)["text"]
        status, text, _ = await sd.command("frobnicate now", ALICE)
        assert "unknown command 'frobnicate'" in json.loads(text)["text"]
        status, text, _ = await sd.command("reject only-a-run-id", ALICE)
        assert "a rejection needs a reason" in json.loads(text)["text"]

        _, _, url = await sd.command("list", ALICE)
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "ephemeral"
        assert run["id"] in answer["text"] and "step `look` (notify.log)" in answer["text"]

        _, _, url = await sd.command(f"show {run['id']}", ALICE)
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "ephemeral"
        assert msgs.APPROVE in elements(answer)  # the same buttons, right in the answer
        _, _, url = await sd.command("show no-such-run", ALICE)
        (answer,) = sd.slack.answers_to(url)
        assert "Nothing changed: no run 'no-such-run'" in answer["text"]


async def test_pause_and_resume(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        _, _, url = await sd.command("pause", ALICE)
        (answer,) = sd.slack.answers_to(url)
        assert answer["response_type"] == "in_channel" and "paused runbookd" in answer["text"]
        _, body = await sd.d.call("GET", "/api/v1/status")
        assert body["paused"] is True
        await sd.click(BOB, msgs.APPROVE, approve_value(sd))
        assert (await sd.d.run(run["id"]))["steps"][0]["state"] == "approved"  # approved, held back
        _, _, url = await sd.command("resume", BOB)
        assert "resumed runbookd" in sd.slack.answers_to(url)[0]["text"]
        await sd.settle()
        assert (await sd.d.run(run["id"]))["steps"][0]["state"] == "succeeded"


async def test_slack_routes_exist_only_when_slack_is_on(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        status, _ = await sd.post("/slack/commands", b"ssl_check=1&token=x")  # Slack checking the URL
        assert status == 200
    (tmp_path / "off").mkdir()
    async with serve_slack(tmp_path / "off", RUNBOOKS, enabled=False) as sd:
        status, _ = await sd.d.webhook(alert_payload(job="node"))
        assert status == 200
        await sd.d.engine.wait_idle()
        for path in ("/slack/interactions", "/slack/commands"):
            status, _ = await sd.post(path, command_body("list", ALICE, sd.slack.response_url()))
            assert status == 404
        assert sd.slack.calls == []
