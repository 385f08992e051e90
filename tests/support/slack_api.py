"""Slack, played on loopback: the Web API runbookd calls and the ``response_url`` it answers through.

``FakeSlack`` records every call (method, parameters, body as sent, the Authorization header apart) and
keeps each posted message's current text and blocks, as ``chat.update`` leaves them. ``fail_next`` makes the
next calls answer 429 (with ``Retry-After``) or 500. Requests *to* runbookd are signed exactly as Slack signs
them (``v0:{timestamp}:{body}``, HMAC-SHA256, form-encoded ``payload`` for interactions); ``serve_slack``
starts runbookd in-process with Slack configured against this fake.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier

from daemon.actions.base import ActionRegistry
from daemon.actions.registry import default_registry
from daemon.config import Secrets, parse_config
from daemon.kits.clock import FrozenClock
from daemon.notify.slack_delivery import RetryPolicy
from daemon.runbooks.loader import load_all
from daemon.server.app import app_runner, create_app
from daemon.server.slack import SLACK, ChatOps

from . import inproc
from .inproc import TOKENS, WEBHOOK, Daemon, alert_payload, base_config, write_runbooks
from .ports import closed_port, free_port

BOT_TOKEN = "xoxb-test-0000-bot-token-do-not-leak"
SIGNING_SECRET = "test-signing-secret-do-not-leak"
SECRETS = [BOT_TOKEN, SIGNING_SECRET, WEBHOOK, *TOKENS.values()]
"""Every secret runbookd holds in these tests: none may appear in anything sent to Slack."""

ALICE, BOB, CAROL, EVE = "UALICE01", "UBOB0002", "UCAROL03", "UEVE0004"
"""Slack users: Alice and Bob are in the `sre` approver group, Carol in `dba`, Eve in none."""
FAST = RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.2, max_retry_after=5)

SCRAPE_FIX = """
name: scrape-fix
description: Look, then silence the scrape alerts of a job while someone fixes it.
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
policy: {cooldown: 0s, on_resolved: cancel}
approval: {approvers: [sre], min_approvers: 1, timeout: 30m}
steps:
  - id: look
    action: notify.log
    description: Say in the timeline what runbookd is looking at.
    with: {message: "looking at {{ params.job }}"}
  - id: silence
    action: alertmanager.silence
    with:
      matchers: [{name: job, value: "{{ params.job }}"}]
      duration: 1h
      comment: runbookd is on it
"""
RUNBOOKS = {"scrape-fix": SCRAPE_FIX}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    authorization: str | None
    raw: str
    status: int
    at: float


@dataclass
class Answer:
    """A body runbookd posted to a response_url."""

    url: str
    body: dict[str, Any]


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    channel_ids: dict[str, str] = field(default_factory=dict)
    _failures: deque[tuple[int, str | None]] = field(default_factory=deque)
    _redirects: deque[tuple[int, str]] = field(default_factory=deque)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _urls: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    port: int = 0
    _runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ control

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self) -> str:
        """A fresh response_url, on ``api_url``'s origin: runbookd answers only on the Slack it is
        configured for (real Slack's are on the hooks. host, which loopback cannot have)."""
        return f"http://127.0.0.1:{self.port}/respond/{next(self._urls)}"

    def fail_next(self, n: int, status: int = 500, retry_after: str | None = None) -> None:
        self._failures.extend([(status, retry_after)] * n)

    def redirect_next(self, location: str, status: int = 307) -> None:
        """Make the next response_url answer a redirect to ``location`` (which runbookd must not follow)."""
        self._redirects.append((status, location))

    def heal(self) -> None:
        self._failures.clear()
        self._redirects.clear()

    def calls_of(self, method: str, *, ok_only: bool = True) -> list[Call]:
        return [c for c in self.calls if c.method == method and (c.status == 200 or not ok_only)]

    def top_messages(self) -> list[dict[str, Any]]:
        """Messages posted outside any thread, as they are now."""
        return [m for m in self.messages.values() if not m.get("thread_ts")]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m.get("thread_ts") == ts]

    def answers_to(self, url: str) -> list[dict[str, Any]]:
        return [a.body for a in self.answers if a.url == url]

    def everything_sent(self) -> str:
        """Every body runbookd sent to Slack (Web API and response_url), for secret scans."""
        return "\n".join([c.raw for c in self.calls] + [json.dumps(a.body) for a in self.answers])

    # ------------------------------------------------------------------ the server

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/respond/{n}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _api(self, request: web.Request) -> web.Response:
        raw = await request.text()
        if request.content_type == "application/json":
            params = json.loads(raw or "{}")
        else:
            params = dict(await request.post())
        method = request.match_info["method"]
        status, retry_after = self._failures.popleft() if self._failures else (200, None)
        now = asyncio.get_running_loop().time()
        self.calls.append(Call(method, params, request.headers.get("Authorization"), raw, status, now))
        if status == 429:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        if status != 200:
            return web.Response(status=status, text="upstream trouble", content_type="text/plain")
        if method == "chat.postMessage":
            return web.json_response(self._post(params))
        if method == "chat.update":
            return web.json_response(self._update(params))
        if method == "views.open":
            return web.json_response({"ok": True, "view": {"id": "V0001", **params.get("view", {})}})
        return web.json_response({"ok": False, "error": "unknown_method"})

    def _channel(self, name: str) -> str:
        if name.startswith("C") and name[1:].isalnum():
            return name
        return self.channel_ids.setdefault(name, f"C{len(self.channel_ids) + 1:08d}")

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(params.get("channel", "")))
        n = next(self._ts)
        ts = f"{1_800_000_000 + n}.{n:06d}"
        message = {**params, "channel": channel, "ts": ts}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (str(params.get("channel")), str(params.get("ts")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key].update(
            text=params.get("text"),
            blocks=params.get("blocks"),
            updates=1 + self.messages[key].get("updates", 0),
        )
        return {"ok": True, "channel": key[0], "ts": key[1]}

    async def _respond(self, request: web.Request) -> web.Response:
        if self._redirects:
            status, location = self._redirects.popleft()
            return web.Response(status=status, headers={"Location": location})
        self.answers.append(Answer(str(request.url.with_query(None)), await request.json()))
        return web.Response(text="ok")


# ---------------------------------------------------------------- what Slack sends runbookd


def signed_headers(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Slack's v0 signature over the body's bytes as sent, which need not be UTF-8 (slack_sdk's signer
    decodes them first: it is only the cross-check, for bodies it can sign)."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        assert signature == SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=text)
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def interaction_body(payload: Mapping[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def click(user: str, action_id: str, value: str, response_url: str) -> dict[str, Any]:
    """A block_actions payload, shaped as Slack sends it."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
        "team": {"id": "T0001"},
        "api_app_id": "A0001",
        "trigger_id": "1234.5678.trigger",
        "container": {"type": "message", "message_ts": "1800000001.000001", "channel_id": "C00000001"},
        "channel": {"id": "C00000001", "name": "ops-approvals"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "runbookd.decide",
                "value": value,
                "type": "button",
                "action_ts": "1",
            }
        ],
    }


def submission(user: str, private_metadata: str, reason: str) -> dict[str, Any]:
    """A view_submission payload of the reject dialog."""
    return {
        "type": "view_submission",
        "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
        "team": {"id": "T0001"},
        "api_app_id": "A0001",
        "view": {
            "id": "V0001",
            "callback_id": "runbookd.reject_reason",
            "private_metadata": private_metadata,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    }


def command_body(text: str, user: str, response_url: str) -> bytes:
    return urlencode(
        {
            "command": "/runbook",
            "text": text,
            "response_url": response_url,
            "trigger_id": "1234.5678.trigger",
            "user_id": user,
            "user_name": user.lower(),
            "team_id": "T0001",
            "channel_id": "C00000001",
            "channel_name": "ops-approvals",
            "api_app_id": "A0001",
        }
    ).encode()


# ---------------------------------------------------------------- runbookd with Slack


@dataclass
class SlackDaemon:
    d: Daemon
    slack: FakeSlack

    @property
    def ops(self) -> ChatOps:
        return self.d.app[SLACK]

    async def post(
        self, path: str, body: bytes, *, timestamp: int | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        ts = int(self.d.clock.now()) if timestamp is None else timestamp
        sent = headers if headers is not None else signed_headers(body, ts)
        async with self.d.session.post(self.d.url + path, data=body, headers=sent) as resp:
            return resp.status, await resp.text()

    async def click(self, user: str, action_id: str, value: str) -> tuple[int, str]:
        """Click a button; returns (HTTP status, the response_url runbookd answers through)."""
        url = self.slack.response_url()
        status, _ = await self.post(
            "/slack/interactions", interaction_body(click(user, action_id, value, url))
        )
        await self.settle()
        return status, url

    async def command(self, text: str, user: str) -> tuple[int, str, str]:
        """Run ``/runbook TEXT``; returns (HTTP status, immediate answer body, response_url)."""
        url = self.slack.response_url()
        status, body = await self.post("/slack/commands", command_body(text, user, url))
        await self.settle()
        return status, body, url

    async def settle(self) -> None:
        """Wait until clicks, commands, steps and notifications have all finished."""
        if SLACK in self.d.app:
            await self.ops.wait_idle()  # a click's work may start steps and notices: those come after
        await self.d.engine.wait_idle()

    def top(self) -> dict[str, Any]:
        tops = self.slack.top_messages()
        assert len(tops) == 1, [m.get("text") for m in tops]
        return tops[0]


def slack_config(
    tmp_path: Path, slack: FakeSlack, server: Mapping[str, Any] | None = None, **slack_overrides: Any
) -> dict[str, Any]:
    return base_config(
        tmp_path,
        server={"listen": "127.0.0.1:0", "public_url": "https://runbookd.example.test", **(server or {})},
        alertmanager={"url": f"http://127.0.0.1:{closed_port()}"},
        approvers={
            "sre": ["admin", "alice", "bob", "vic", f"slack:{ALICE}", f"slack:{BOB}"],
            "dba": ["carol", f"slack:{CAROL}"],
        },
        slack={
            "bot_token": {"env": "RUNBOOKD_SLACK_BOT_TOKEN"},
            "signing_secret": {"env": "RUNBOOKD_SLACK_SIGNING_SECRET"},
            "api_url": slack.api_url,
            "channel": "#ops-approvals",
            "timeout": "2s",
            **slack_overrides,
        },
    )


@asynccontextmanager
async def serve_slack(
    tmp_path: Path,
    runbooks: Mapping[str, str],
    *,
    registry: ActionRegistry | None = None,
    retry: RetryPolicy = FAST,
    slack: FakeSlack | None = None,
    server: Mapping[str, Any] | None = None,
    **slack_overrides: Any,
) -> AsyncIterator[SlackDaemon]:
    """runbookd in-process with Slack on, against ``slack`` (default: a fresh FakeSlack, closed on exit)."""
    own = slack is None
    slack = slack or await FakeSlack().start()
    try:
        write_runbooks(tmp_path, runbooks)
        cfg = parse_config(slack_config(tmp_path, slack, server, **slack_overrides))
        if inproc.STATE_URL is not None:  # the store_backend fixture (as support.inproc.serve)
            cfg = cfg.model_copy(update={"state": cfg.state.model_copy(update={"url": inproc.STATE_URL})})
        registry = registry or default_registry()
        loaded = load_all(cfg.runbooks.paths, registry, list(cfg.approvers))
        secrets = Secrets(
            webhook_token=SecretStr(WEBHOOK),
            tokens={k: SecretStr(v) for k, v in TOKENS.items()},
            slack_bot_token=SecretStr(BOT_TOKEN),
            slack_signing_secret=SecretStr(SIGNING_SECRET),
        )
        clock = FrozenClock()
        app = create_app(cfg, secrets, loaded, registry=registry, clock=clock, tick_interval=3600)
        if SLACK in app:  # not when the test turned Slack off
            app[SLACK].retry = retry
        runner = app_runner(app, cfg)  # as runbookd serve serves it
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                sd = SlackDaemon(Daemon(f"http://127.0.0.1:{port}", app, clock, session), slack)
                yield sd
                await sd.settle()
        finally:
            await runner.cleanup()
    finally:
        if own:
            await slack.close()


# ---------------------------------------------------------------- reading what runbookd sent


async def start_run(sd: SlackDaemon, job: str = "node", **labels: str) -> dict[str, Any]:
    """Fire the test alert for ``job`` and wait until runbookd has told Slack about the new run."""
    status, body = await sd.d.webhook(alert_payload(job=job, fingerprint=f"fp-{job}", **labels))
    assert status == 200, body
    await sd.settle()
    return await sd.d.run(body["started"][0])


def elements(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's interactive elements by action_id (empty when its buttons are gone)."""
    return {
        e["action_id"]: e
        for b in message.get("blocks") or []
        if b["type"] == "actions"
        for e in b["elements"]
    }


def text_of(message: dict[str, Any]) -> str:
    """All the text of a message's blocks, for content checks."""
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + "\n" + str(message.get("text"))
