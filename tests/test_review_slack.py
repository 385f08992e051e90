"""Review findings on the Slack side: untrusted text in a message's notification text, and signed
requests replayed inside Slack's 5-minute window."""

from __future__ import annotations

from pathlib import Path

from support.slack_api import (
    ALICE,
    RUNBOOKS,
    click,
    command_body,
    elements,
    interaction_body,
    serve_slack,
    start_run,
)

from daemon.notify import slack_messages as msgs

HOSTILE = "<!channel> <https://evil.example|log in again>"


async def test_target_from_an_alert_label_cannot_ping_in_the_notification_text(tmp_path: Path) -> None:
    """The top message's ``text`` (what Slack shows in notifications, parsed as mrkdwn) carries the run's
    target, which comes from an alert label: it must be escaped like the blocks are."""
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        await start_run(sd, job=HOSTILE)
        posts = sd.slack.calls_of("chat.postMessage") + sd.slack.calls_of("chat.update")
        assert posts
        for call in posts:
            text = str(call.params.get("text"))
            assert "<!channel>" not in text and "<https://evil.example" not in text, text
        assert "&lt;!channel&gt;" in str(sd.top()["text"])


async def test_a_signed_command_cannot_be_replayed_inside_the_window(tmp_path: Path) -> None:
    """``/runbook approve RUN`` approves whatever step is current: a captured, validly signed request sent
    again a minute later would approve the *next* step as that person. Slack never re-sends a command or a
    click, so a second delivery of the same signed request is a replay and gets 401."""
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        run = await start_run(sd)
        url = sd.slack.response_url()
        body = command_body(f"approve {run['id']}", ALICE, url)
        now = int(sd.d.clock.now())
        status, _ = await sd.post("/slack/commands", body, timestamp=now)
        assert status == 200
        await sd.settle()
        after = await sd.d.run(run["id"])
        assert after["current_step"] == "silence" and after["state"] == "awaiting_approval"

        sd.d.clock.advance(60)
        status, text = await sd.post("/slack/commands", body, timestamp=now)  # same bytes, same signature
        assert status == 401, text
        await sd.settle()
        again = await sd.d.run(run["id"])
        assert again["steps"][1]["approvals"] == [] and again["state"] == "awaiting_approval"

        # the same holds for a button click
        value = str(elements(sd.top())[msgs.APPROVE]["value"])
        click_body = interaction_body(click(ALICE, msgs.REJECT, value, sd.slack.response_url()))
        stamp = int(sd.d.clock.now())
        assert (await sd.post("/slack/interactions", click_body, timestamp=stamp))[0] == 200
        assert (await sd.post("/slack/interactions", click_body, timestamp=stamp))[0] == 401
        await sd.settle()
        assert len(sd.slack.calls_of("views.open")) == 1
