"""What a Slack user's click or ``/runbook`` command does: the engine's own calls (so its approval rules
hold as they do in the API), then upkeep of the run's thread. Each returns the answer for the person
(``slack_replies``), or None when the thread already says it.

A click on a stale message (run ended, step done, plan changed) changes nothing: the answer says why and
the message is brought up to date, so its buttons go once the run has ended.
"""

from __future__ import annotations

from collections.abc import Awaitable

import structlog

from daemon.engine.engine import Engine
from daemon.engine.identity import Identity
from daemon.errors import Conflict, NotFound, RunbookdError
from daemon.notify import slack_replies as replies
from daemon.notify.slack import SlackNotifier
from daemon.notify.slack_commands import Command
from daemon.notify.slack_delivery import SlackApi, SlackError
from daemon.notify.slack_messages import ButtonValue, approved_note
from daemon.store.records import RunState

Answer = replies.Answer
log = structlog.get_logger("runbookd.slack")


class SlackOperations:
    def __init__(self, api: SlackApi, notifier: SlackNotifier, public_url: str | None) -> None:
        self._api = api
        self._notifier = notifier
        self._public_url = public_url

    async def _quietly(self, call: Awaitable[None]) -> None:
        """Message upkeep after the work is done: a failure here must not be reported as the work's."""
        try:
            await call
        except RunbookdError as exc:
            log.warning("slack.upkeep_failed", error=str(exc))

    async def approve_click(self, engine: Engine, identity: Identity, button: ButtonValue) -> Answer | None:
        try:
            run = await engine.approve(button.run, button.step, identity, button.plan_hash)
        except (Conflict, NotFound) as exc:  # a stale message: bring it up to date and say why
            await self._quietly(self._notifier.refresh(button.run))
            return replies.nothing_changed(str(exc))
        await self._quietly(self._notifier.note(button.run, approved_note(run, button.step, identity.name)))
        await self._quietly(self._notifier.refresh(button.run))
        return None

    async def reject_click(
        self, engine: Engine, button: ButtonValue, trigger_id: str, response_url: str
    ) -> Answer | None:
        run = await engine.get_run(button.run)
        if not RunState(run["state"]).active:
            await self._quietly(self._notifier.refresh(button.run))
            return replies.nothing_changed(f"run {run['id']} is already {run['state']}: {run.get('outcome')}")
        try:
            await self._api.open_view(trigger_id, replies.reject_dialog(run, button.step, response_url))
        except SlackError as exc:
            return replies.failed(
                f"could not open the reason dialog ({exc}); use /runbook reject {run['id']} REASON"
            )
        return None

    async def reject(
        self, engine: Engine, identity: Identity, run_id: str, reason: str, *, tell: bool
    ) -> Answer | None:
        """Reject a run. ``tell``: answer in the channel (a command); a dialog's thread gets the outcome."""
        try:
            run = await engine.reject(run_id, identity, reason)
        except (Conflict, NotFound) as exc:
            await self._quietly(self._notifier.refresh(run_id))
            return replies.nothing_changed(str(exc))
        return replies.rejected(run, identity.name, reason) if tell else None

    async def command(self, engine: Engine, identity: Identity, cmd: Command) -> Answer | None:
        if cmd.verb == "list":
            runs = await engine.run_summaries("awaiting_approval") + await engine.run_summaries(
                "needs_attention"
            )
            return replies.run_list(runs)
        if cmd.verb in ("pause", "resume"):
            state = await engine.set_paused(cmd.verb == "pause", identity)
            return replies.paused(state, identity.name)
        assert cmd.run_id is not None
        if cmd.verb == "show":
            return replies.show(await engine.get_run(cmd.run_id), self._public_url)
        if cmd.verb == "reject":
            return await self.reject(engine, identity, cmd.run_id, cmd.reason or "", tell=True)
        return await self._approve_command(engine, identity, cmd.run_id, cmd.step)

    async def _approve_command(
        self, engine: Engine, identity: Identity, run_id: str, step_id: str | None
    ) -> Answer | None:
        """Approve the step's current plan (the one ``show`` prints and the answer repeats). A mutating step
        must be named (``approve RUN STEP``): typing "approve RUN" must never approve a change the person
        has not seen because the run moved on in the meantime."""
        run = await engine.get_run(run_id)
        named = step_id is not None
        step_id = step_id or run["current_step"]
        if step_id is None:
            raise Conflict(f"run {run_id} is {run['state']}: it has no step to approve")
        step = next((s for s in run["steps"] if s["id"] == step_id), None)
        if step is not None and step["mutating"] and not named:
            return replies.nothing_changed(
                f"step {step_id} of {run_id} changes something ({step['action']}): review it with "
                f"`/runbook show {run_id}`, then approve it by name: `/runbook approve {run_id} {step_id}`"
            )
        plan_hash = step["plan_hash"] if step and step["state"] == "awaiting_approval" else None
        try:
            after = await engine.approve(run_id, step_id, identity, plan_hash)
        except (Conflict, NotFound) as exc:
            await self._quietly(self._notifier.refresh(run_id))
            return replies.nothing_changed(str(exc))
        await self._quietly(self._notifier.note(run_id, approved_note(after, step_id, identity.name)))
        await self._quietly(self._notifier.refresh(run_id))
        return replies.approved(after, step_id, identity.name)
