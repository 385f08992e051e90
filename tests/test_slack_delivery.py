"""Slack as a dependency: rate limits and outages never hold a run up; threads outlive restarts; a run can be
walked from alert to end in Slack alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.slack_api import (
    ALICE,
    BOB,
    RUNBOOKS,
    FakeSlack,
    elements,
    serve_slack,
    start_run,
    text_of,
)

from daemon.notify import slack_messages as msgs
from daemon.notify.slack_delivery import RetryPolicy


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    slack = await FakeSlack().start()
    yield slack
    await slack.close()


async def test_rate_limited_message_is_sent_after_retry_after(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS, retry=RetryPolicy(attempts=3, first_delay=0.05)) as sd:
        sd.slack.fail_next(1, status=429, retry_after="1")
        await start_run(sd)
        first, second = sd.slack.calls_of("chat.postMessage", ok_only=False)
        assert (first.status, second.status) == (429, 200)
        assert second.at - first.at >= 0.95  # Slack's Retry-After, not our 0.05 s backoff
        assert len(sd.slack.top_messages()) == 1


async def test_slack_down_never_holds_a_run_and_the_thread_catches_up(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        sd.slack.fail_next(1000, status=500)
        run = await start_run(sd)
        assert run["state"] == "awaiting_approval"
        assert (await sd.d.approve(run["id"], "look", who="alice"))[0] == 200  # the API keeps working
        await sd.settle()
        run = await sd.d.run(run["id"])
        assert run["steps"][0]["state"] == "succeeded" and run["current_step"] == "silence"
        assert sd.slack.top_messages() == []
        assert len(sd.slack.calls_of("chat.postMessage", ok_only=False)) >= 3 * 3  # retried, bounded
        _, metrics = await sd.d.call("GET", "/metrics")
        assert 'runbookd_notifications_failed_total{notifier="slack"} 3.0' in metrics

        sd.slack.heal()
        # Slack is back: the next notice of the run posts its top message, from the run as it is then
        status, _, url = await sd.command(f"approve {run['id']} silence", BOB)
        assert status == 200 and sd.slack.answers_to(url)[0]["response_type"] == "in_channel"
        await sd.settle()
        top = sd.top()
        assert ":white_check_mark: *succeeded*" in text_of(top) and elements(top) == {}
        assert [r["text"] for r in sd.slack.replies(top["ts"])][-1] == "scrape-fix: run succeeded"


async def test_finished_runs_lose_their_buttons(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        assert msgs.APPROVE in elements(sd.top())
        for step, who in (("look", "alice"), ("silence", "bob")):
            assert (await sd.d.approve(run["id"], step, who=who))[0] == 200
            await sd.settle()
        last = sd.slack.calls_of("chat.update")[-1]
        assert last.params["ts"] == sd.top()["ts"]
        assert not [b for b in last.params["blocks"] if b["type"] == "actions"]
        assert "open in the API>" in text_of(sd.top())  # the link stays, as text


async def test_a_run_approved_entirely_from_slack(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        for who, step in ((ALICE, "look"), (BOB, "silence")):
            approve = elements(sd.top())[msgs.APPROVE]
            assert msgs.ButtonValue.decode(approve["value"]).step == step
            status, url = await sd.click(who, msgs.APPROVE, approve["value"])
            assert status == 200 and sd.slack.answers_to(url) == []
        run = await sd.d.run(run["id"])
        assert run["state"] == "succeeded"
        assert [(s["approvals"][0]["by"], s["approvals"][0]["via"]) for s in run["steps"]] == [
            (f"slack:{ALICE}", "slack"),
            (f"slack:{BOB}", "slack"),
        ]
        top = sd.top()
        assert elements(top) == {} and ":white_check_mark: *succeeded*" in text_of(top)
        assert [r["text"] for r in sd.slack.replies(top["ts"])] == [
            f"slack:{ALICE} approved step look",
            "scrape-fix: step look succeeded",
            "scrape-fix: step silence awaits approval",
            f"slack:{BOB} approved step silence",
            "scrape-fix: step silence succeeded",
            "scrape-fix: run succeeded",
        ]
        assert len(sd.slack.calls_of("chat.postMessage")) == 7  # one top message, six replies


async def test_the_thread_survives_a_restart(tmp_path: Path, fake_slack: FakeSlack) -> None:
    async with serve_slack(tmp_path, RUNBOOKS, slack=fake_slack) as sd:
        run = await start_run(sd)
        ts = sd.top()["ts"]
    async with serve_slack(tmp_path, RUNBOOKS, slack=fake_slack) as sd:
        status, _ = await sd.click(ALICE, msgs.APPROVE, str(elements(sd.top())[msgs.APPROVE]["value"]))
        assert status == 200
        assert (await sd.d.run(run["id"]))["current_step"] == "silence"
        assert sd.top()["ts"] == ts  # the same thread, not a second top message
        assert "scrape-fix: step look succeeded" in [r["text"] for r in sd.slack.replies(ts)]


async def test_reminder_before_the_deadline(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS, reminder_before="5m") as sd:
        run = await start_run(sd)
        ts = sd.top()["ts"]
        sd.d.clock.advance(24 * 60)
        await sd.d.engine.tick()
        await sd.settle()
        assert sd.slack.replies(ts) == []
        sd.d.clock.advance(2 * 60)
        for _ in range(2):  # once, however often the engine ticks
            await sd.d.engine.tick()
            await sd.settle()
        (reminder,) = sd.slack.replies(ts)
        assert reminder["reply_broadcast"] is True
        assert "Step `look` still awaits approval; the run expires <!date^" in text_of(reminder)
        assert (await sd.d.run(run["id"]))["state"] == "awaiting_approval"
