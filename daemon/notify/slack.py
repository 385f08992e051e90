"""The Slack notifier: one thread per run, its top message kept current with ``chat.update``.

The first notice of a run posts the top message (in the runbook's channel) and records its channel and
``ts`` in the store's kv table, so the thread survives restarts. Every later notice re-renders the top
message from the run as it is *now* in the store (never from an older snapshot) and adds a reply to the
thread: a step's result, a later step's approval request, the outcome. Notices of one run are handled one
at a time, in the order the engine emitted them; different runs proceed independently.

Delivery is retried (``slack_delivery``); when Slack stays down the notice fails, the engine counts it and
the run goes on. The next notice of that run catches the top message up (or posts it, if it never got out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.engine.notifier import RunNotice
from daemon.engine.views import run_view
from daemon.notify import slack_messages as msgs
from daemon.notify.slack_delivery import SlackApi, SlackRefused
from daemon.store.base import StateStore

THREADS = "slack.threads"
"""kv namespace: run id -> {"channel": channel ID, "ts": top message ts}."""

log = structlog.get_logger("runbookd.slack")


@dataclass(frozen=True)
class Thread:
    channel: str
    ts: str


@dataclass
class _RunLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class SlackNotifier:
    name = "slack"

    def __init__(
        self,
        *,
        api: SlackApi,
        store: StateStore,
        channel_for: Callable[[str], str],
        public_url: str | None = None,
    ) -> None:
        self._api = api
        self._store = store
        self._channel_for = channel_for
        self._public_url = public_url
        self._locks: dict[str, _RunLock] = {}

    # ------------------------------------------------------------------ the Notifier protocol

    async def notify(self, notice: RunNotice) -> None:
        run_id = notice.run["id"]
        async with self._serialised(run_id):
            latest, thread = await self._load(run_id)
            run = latest or notice.run
            fresh = thread is None
            if thread is None:
                thread = await self._open(run)
            else:
                await self._update(thread, run)
            reply = _reply(notice, fresh)
            if reply is not None:
                message, broadcast = reply
                await self._api.post_message(
                    thread.channel,
                    message.text,
                    message.blocks,
                    thread_ts=thread.ts,
                    reply_broadcast=broadcast,
                )

    # ------------------------------------------------------------------ for the interactions endpoint

    async def refresh(self, run_id: str) -> None:
        """Bring the top message up to date (e.g. after a click on a stale one, or a partial approval)."""
        async with self._serialised(run_id):
            latest, thread = await self._load(run_id)
            if latest is not None and thread is not None:
                await self._update(thread, latest)

    async def note(self, run_id: str, message: msgs.Message) -> None:
        """Reply in the run's thread, if it has one."""
        async with self._serialised(run_id):
            _latest, thread = await self._load(run_id)
            if thread is not None:
                await self._api.post_message(
                    thread.channel, message.text, message.blocks, thread_ts=thread.ts
                )

    # ------------------------------------------------------------------ internals

    @asynccontextmanager
    async def _serialised(self, run_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(run_id, _RunLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(run_id, None)

    async def _load(self, run_id: str) -> tuple[dict[str, Any] | None, Thread | None]:
        async with self._store.transaction() as tx:
            record = await tx.kv_get(THREADS, run_id)
            run = await tx.get_run(run_id)
            view = None
            if run is not None:
                steps, undos = await tx.steps_of(run_id), await tx.undos_of(run_id)
                view = run_view(run, steps, await tx.approvals_of(run_id), undos=undos)
        thread = None
        if record and isinstance(record.get("channel"), str) and isinstance(record.get("ts"), str):
            thread = Thread(record["channel"], record["ts"])
        return view, thread

    async def _open(self, run: dict[str, Any]) -> Thread:
        message = msgs.run_message(run, self._public_url)
        answer = await self._api.post_message(self._channel_for(run["runbook"]), message.text, message.blocks)
        channel, ts = answer.get("channel"), answer.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            raise SlackRefused("chat.postMessage answered without channel and ts")
        thread = Thread(channel, ts)
        async with self._store.transaction() as tx:
            await tx.kv_put(THREADS, run["id"], {"channel": channel, "ts": ts})
        log.info("slack.thread_opened", run_id=run["id"], channel=channel, ts=ts)
        return thread

    async def _update(self, thread: Thread, run: dict[str, Any]) -> None:
        message = msgs.run_message(run, self._public_url)
        try:
            await self._api.update_message(thread.channel, thread.ts, message.text, message.blocks)
        except SlackRefused as exc:  # e.g. someone deleted the message: the thread replies still go out
            log.warning("slack.update_refused", run_id=run["id"], error=str(exc))


def _reply(notice: RunNotice, fresh: bool) -> tuple[msgs.Message, bool] | None:
    """The thread reply for a notice, and whether to show it in the channel too."""
    run, step = notice.run, notice.step
    if notice.kind == "run_ended":
        return msgs.outcome_reply(run), False
    if step is None:
        return None
    if notice.kind == "approval_requested":
        return None if fresh else (msgs.approval_reply(run, step), True)
    if notice.kind == "step_finished":
        return msgs.step_result_reply(run, step), False
    if notice.kind == "run_attention":
        return msgs.attention_reply(run, step), True
    if notice.kind == "reminder":
        return msgs.reminder_reply(run, step), True
    return None
