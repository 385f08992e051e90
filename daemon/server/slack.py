"""Slack's two endpoints: button clicks and dialogs (``POST /slack/interactions``) and the ``/runbook``
command (``POST /slack/commands``).

Every request's signature and timestamp (5-minute window) are checked before anything in it is read:
forged, unsigned, replayed or altered requests get 401 and change nothing; a signed but malformed one gets
400; a compressed one (Slack never compresses) gets 415 before its body is read. Slack waits 3 seconds
for an answer, so the handler answers at once and the work happens in a named background task, which
replies through the request's ``response_url``: only one on the configured Slack (``slack.api_url``'s
host or its ``hooks.`` host), anything else is 400 before any work starts. A Slack user acts as
``slack:<user id>`` with the approver role when some approver group lists that name, and through exactly
the engine's calls, so the approval rules are the API's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

from daemon.config import Config, Secrets
from daemon.engine.identity import Identity
from daemon.errors import InvalidRequest, RunbookdError
from daemon.kits import strictjson
from daemon.kits.clock import Clock, SystemClock
from daemon.notify import slack_replies as replies
from daemon.notify.slack import SlackNotifier
from daemon.notify.slack_commands import UsageError, parse
from daemon.notify.slack_delivery import (
    MAX_RESPONSE_URL,
    RetryPolicy,
    SlackApi,
    SlackError,
    response_url_allowed,
)
from daemon.notify.slack_messages import APPROVE, REJECT, ButtonValue
from daemon.notify.slack_operations import SlackOperations
from daemon.runbooks.loader import LoadedRunbook
from daemon.server import expect
from daemon.server.answers import json_response
from daemon.server.auth import Unauthorized
from daemon.server.errors import error
from daemon.server.keys import BODIES, engine_of
from daemon.store.base import StateStore

log = structlog.get_logger("runbookd.slack")

_USER_ID = re.compile(r"^[A-Z0-9]{2,32}$")
Answer = replies.Answer
_SIGNATURE_WINDOW = 300
"""Seconds a signed request stays valid on either side of its timestamp (as slack_sdk's verifier)."""
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
"""Slack's signature header: version 0, HMAC-SHA256 in hex."""
_COMPRESSED = "compressed body (Content-Encoding)"
"""The refusal's ``error`` in the log: one text, so a flood of them is one kind to the rate limit."""


def slack_identity(
    user_id: str, approvers: Mapping[str, list[str]], display: str | None = None
) -> Identity | None:
    """``slack:<user id>`` as an approver when an approver group lists it; None for anyone else."""
    name = f"slack:{user_id}"
    if any(name in members for members in approvers.values()):
        return Identity(name=name, role="approver", via="slack", display=display)
    return None


class ChatOps:
    """Slack's side of runbookd: verifies requests, runs their work in supervised background tasks."""

    def __init__(
        self, config: Config, secrets: Secrets, runbooks: Mapping[str, LoadedRunbook], clock: Clock
    ) -> None:
        assert config.slack is not None
        assert secrets.slack_bot_token is not None and secrets.slack_signing_secret is not None
        self.config, self.slack = config, config.slack
        self.retry = RetryPolicy()
        """Retries of every call to Slack; set before start-up to change it."""
        self._token = secrets.slack_bot_token
        self._clock = clock
        self._signing_key = secrets.slack_signing_secret.get_secret_value().encode()
        self._store: StateStore | None = None
        """Where signatures of accepted requests are kept (replays refused across restarts)."""
        self._runbook_channels = {
            name: lr.runbook.channel for name, lr in runbooks.items() if lr.runbook.channel
        }
        self._api: SlackApi | None = None
        self._work: SlackOperations | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def install(
        cls,
        app: web.Application,
        config: Config,
        secrets: Secrets,
        runbooks: Mapping[str, LoadedRunbook],
        clock: Clock | None = None,
    ) -> ChatOps | None:
        """Add the Slack routes when Slack is configured, enabled and its secrets are resolved."""
        if config.slack is None or not config.slack.enabled:
            return None
        if secrets.slack_bot_token is None or secrets.slack_signing_secret is None:
            log.warning("slack.off", reason="bot token or signing secret not resolved")
            return None
        ops = cls(config, secrets, runbooks, clock or SystemClock())
        app[SLACK] = ops
        signed = expect.expect_handler(ops._refuse_unsigned)
        app.router.add_post("/slack/interactions", interactions, expect_handler=signed)
        app.router.add_post("/slack/commands", commands, expect_handler=signed)
        return ops

    def start(self, store: StateStore) -> SlackNotifier:
        """Create the Web API client and the notifier (once the store is open)."""
        public_url = self.config.server.public_url
        self._store = store
        self._api = SlackApi(self._token, self.slack.api_url, self.slack.timeout, self.retry)
        notifier = SlackNotifier(
            api=self._api, store=store, channel_for=self.channel_for, public_url=public_url
        )
        self._work = SlackOperations(self._api, notifier, public_url)
        return notifier

    def channel_for(self, runbook: str) -> str:
        """The config's per-runbook channel, else the runbook's own, else the default."""
        return self.slack.channels.get(runbook) or self._runbook_channels.get(runbook) or self.slack.channel

    @property
    def api(self) -> SlackApi:
        if self._api is None:
            raise web.HTTPServiceUnavailable(reason="runbookd is starting")
        return self._api

    @property
    def work(self) -> SlackOperations:
        if self._work is None:
            raise web.HTTPServiceUnavailable(reason="runbookd is starting")
        return self._work

    def identity(self, user_id: str, display: object = None) -> Identity | None:
        return slack_identity(user_id, self.config.approvers, display if isinstance(display, str) else None)

    # ------------------------------------------------------------------ requests

    async def verified_body(self, request: web.Request) -> bytes:
        """The raw body, once its Slack signature and timestamp check out; 401 otherwise.

        What can be checked before the body is read is checked first (both headers present, well-formed,
        the timestamp inside the window; the body not compressed), so an unsigned request costs no body
        read at all."""
        timestamp = self._signed_at(request.headers)
        if timestamp is None:
            raise self._unverified(request)
        self._refuse_compressed(request)
        body = await request.app[BODIES].read(request, pool="slack")
        signature = request.headers["X-Slack-Signature"]
        if not self._signs(signature, request.headers["X-Slack-Request-Timestamp"], body):
            raise self._unverified(request)
        if not await self._first_delivery(signature, timestamp):
            log.warning("slack.replayed_request", path=request.path, remote=request.remote, error="replayed")
            raise Unauthorized("replayed Slack request: this signed request was already received")
        return body

    def _refuse_unsigned(self, request: web.Request) -> web.Response | None:
        """``verified_body``'s checks on the headers, for ``Expect: 100-continue`` (Slack never sends it)."""
        if self._signed_at(request.headers) is None:
            return error(401, str(self._unverified(request)))
        return None

    def _signs(self, signature: str, timestamp: str, body: bytes) -> bool:
        """Whether ``signature`` is Slack's v0 signature of the body's bytes as sent: ``v0=`` and the hex
        HMAC-SHA256, keyed with the signing secret, of ``v0:{timestamp}:{body}``, compared in constant time.

        Over bytes, not text: slack_sdk's verifier decodes the body as UTF-8 first, so a signed body that
        is not UTF-8 failed as a forged signature (401) instead of reaching the form parser (400)."""
        mac = hmac.new(self._signing_key, b"v0:" + timestamp.encode("ascii") + b":", hashlib.sha256)
        mac.update(body)
        return hmac.compare_digest("v0=" + mac.hexdigest(), signature)

    def _signed_at(self, headers: Mapping[str, str]) -> int | None:
        """The request's timestamp, if its signature headers could be valid; None otherwise."""
        ts, sig = headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
        if (
            ts.isascii()
            and ts.isdigit()
            and len(ts) <= 12
            and _SIGNATURE.fullmatch(sig)
            and abs(self._clock.now() - int(ts)) <= _SIGNATURE_WINDOW
        ):
            return int(ts)
        return None

    def _refuse_compressed(self, request: web.Request) -> None:
        """415 for a body with a Content-Encoding other than identity, before a byte of it is read.

        Slack sends its requests uncompressed (its signature is over the bytes sent, and its own receivers
        verify them as they arrive). Inflating a forged body, only to find its signature wrong, is work an
        unsigned sender could make us do on the event loop: 1 kB of gzip is 1 MiB to inflate and HMAC."""
        codings = [
            c.strip().lower()
            for value in request.headers.getall("Content-Encoding", ())
            for c in value.split(",")
        ]
        if all(c in ("", "identity") for c in codings):
            return
        log.warning(
            "slack.refused_request",
            path=request.path,
            remote=request.remote,
            error=_COMPRESSED,
            encoding=", ".join(codings)[:40],
        )
        raise web.HTTPUnsupportedMediaType(  # RFC 9110 15.5.16: say which codings would do
            text=strictjson.dumps(
                {"error": "Slack requests are not compressed: Content-Encoding must be identity"}
            ),
            content_type="application/json",
            headers={"Accept-Encoding": "identity"},
        )

    def _unverified(self, request: web.Request) -> Unauthorized:
        log.warning(
            "slack.unverified_request", path=request.path, remote=request.remote, error="bad signature"
        )
        return Unauthorized("missing, invalid or expired Slack signature")

    async def _first_delivery(self, signature: str, timestamp: int) -> bool:
        """Record a verified request's signature in the store while its timestamp is valid; False if it
        was recorded already, before this start or since.

        Slack never re-sends a command or an interaction, so the same signature twice is a replay (for
        ``/runbook approve RUN``, which approves the current step, a replay could approve the next one;
        a replayed ``/runbook pause`` after a restart would pause the daemon)."""
        if self._store is None:
            raise web.HTTPServiceUnavailable(reason="runbookd is starting")
        async with self._store.transaction() as tx:
            return await tx.first_slack_delivery(
                signature, timestamp + _SIGNATURE_WINDOW + 1, self._clock.now()
            )

    # ------------------------------------------------------------------ background work

    def spawn(self, work: Coroutine[Any, Any, Answer | None], response_url: str | None, name: str) -> None:
        task = asyncio.create_task(self._answering(work, response_url), name=f"slack.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answering(self, work: Awaitable[Answer | None], response_url: str | None) -> None:
        try:
            answer = await work
        except RunbookdError as exc:  # the engine's refusals (rules, stale state) and Slack failures
            answer = replies.nothing_changed(str(exc))
        except Exception:
            log.exception("slack.work_failed")
            answer = replies.failed(
                "runbookd hit an internal error (see its log); check the run before retrying"
            )
        if answer is not None and response_url is not None:
            try:
                await self.api.respond(response_url, answer)
            except SlackError as exc:
                log.warning("slack.answer_failed", error=str(exc))

    async def drain(self, timeout: float = 5.0) -> None:
        """Let clicks and commands in progress finish (shutdown), cancelling what outlasts ``timeout``."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            log.warning("slack.cancelling", task=task.get_name())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no click or command is being worked on (tests)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))


SLACK = web.AppKey("slack", ChatOps)


# ---------------------------------------------------------------- parsing (after verification only)


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=64,
            errors="strict",  # %ff: not UTF-8, refused (the default would make it U+FFFD)
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("expected a form body (application/x-www-form-urlencoded, UTF-8)") from None
    if any("\x00" in k or "\x00" in v for k, v in pairs):  # no store keeps it (PostgreSQL refuses it)
        raise InvalidRequest("a form field holds a NUL character (%00)")
    form = dict(pairs)
    if len(form) != len(pairs):  # which one counts? Python's the last, a proxy or a log maybe the first
        raise InvalidRequest("a form field is repeated")
    return form


def _json_object(text: object, what: str) -> dict[str, Any]:
    try:
        data = strictjson.loads(text) if isinstance(text, str) else None
    except strictjson.JSONRefused:
        data = None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} is not a JSON object")
    return data


def _user_id(value: object) -> str:
    if isinstance(value, str) and _USER_ID.fullmatch(value):
        return value
    raise InvalidRequest("missing or invalid Slack user id")


_FOREIGN_URL = "response_url not on the configured Slack"
"""The refusal's ``error`` in the log: one text, so a flood of them is one kind to the rate limit."""


def _response_url(value: object, api_url: str) -> str:
    """The request's response_url, if runbookd may answer there: 400 otherwise, before any work starts.

    Only a URL on the configured Slack (``slack.api_url``'s scheme, its host or ``hooks.`` + its host,
    no userinfo; ``response_url_allowed``) is taken. The request is signed, but runbookd runs inside a
    cluster: should the signing secret leak, any URL here would make it POST to internal services. A
    signed request with a foreign URL means exactly that, so it is logged as a warning."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("missing response_url")
    if not response_url_allowed(value, api_url):
        log.warning("slack.foreign_response_url", error=_FOREIGN_URL)
        raise InvalidRequest(
            "invalid response_url: runbookd answers only on the configured Slack (an http(s) URL with "
            "slack.api_url's scheme, on its host or hooks.<its host>, without userinfo, whitespace or "
            f"control characters, under {MAX_RESPONSE_URL} characters)"
        )
    return value


def _text(value: object, what: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise InvalidRequest(f"missing {what}")


# ---------------------------------------------------------------- handlers


async def interactions(request: web.Request) -> web.StreamResponse:
    ops = request.app[SLACK]
    payload = _json_object(_form(await ops.verified_body(request)).get("payload"), "payload")
    user = payload.get("user")
    user_id = _user_id(user.get("id") if isinstance(user, dict) else None)
    display = user.get("username") if isinstance(user, dict) else None
    if payload.get("type") == "block_actions":
        return _on_click(request, ops, payload, user_id, display)
    if payload.get("type") == "view_submission":
        return _on_submission(request, ops, payload, user_id, display)
    return web.Response()  # other interaction types: acknowledged, nothing to do


def _on_click(
    request: web.Request, ops: ChatOps, payload: dict[str, Any], user_id: str, display: object
) -> web.StreamResponse:
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise InvalidRequest("block_actions without actions")
    action_id = actions[0].get("action_id")
    if action_id not in (APPROVE, REJECT):
        return web.Response()  # the link button, or a button of some other app version
    response_url = _response_url(payload.get("response_url"), ops.slack.api_url)
    try:
        button = ButtonValue.decode(actions[0].get("value"))
    except ValueError:
        raise InvalidRequest("the button carries no run, step and plan hash") from None
    log.info("slack.click", action=action_id, user=user_id, run_id=button.run, step=button.step)
    identity = ops.identity(user_id, display)
    engine = engine_of(request)
    if identity is None:
        ops.spawn(_ready(replies.not_allowed(user_id)), response_url, f"refuse.{user_id}")
    elif action_id == APPROVE:
        ops.spawn(ops.work.approve_click(engine, identity, button), response_url, f"approve.{button.run}")
    else:
        trigger_id = _text(payload.get("trigger_id"), "trigger_id")
        ops.spawn(
            ops.work.reject_click(engine, button, trigger_id, response_url),
            response_url,
            f"reject.{button.run}",
        )
    return web.Response()


def _on_submission(
    request: web.Request, ops: ChatOps, payload: dict[str, Any], user_id: str, display: object
) -> web.StreamResponse:
    view = payload.get("view")
    if not isinstance(view, dict) or view.get("callback_id") != replies.REJECT_VIEW:
        return web.Response()
    meta = _json_object(view.get("private_metadata"), "private_metadata")
    run_id = _text(meta.get("run"), "run id")
    response_url = _response_url(meta.get("response_url"), ops.slack.api_url)
    try:
        reason = view["state"]["values"][replies.REASON_BLOCK][replies.REASON_BLOCK]["value"]
    except (KeyError, TypeError):
        raise InvalidRequest("the dialog was submitted without a reason field") from None
    if not isinstance(reason, str) or not reason.strip():
        errors = {replies.REASON_BLOCK: "A rejection needs a reason."}
        return json_response({"response_action": "errors", "errors": errors})
    log.info("slack.reject_submitted", user=user_id, run_id=run_id)
    identity = ops.identity(user_id, display)
    if identity is None:
        ops.spawn(_ready(replies.not_allowed(user_id)), response_url, f"refuse.{user_id}")
    else:
        ops.spawn(
            ops.work.reject(engine_of(request), identity, run_id, reason.strip(), tell=False),
            response_url,
            f"reject.{run_id}",
        )
    return web.Response()  # closes the dialog


async def commands(request: web.Request) -> web.StreamResponse:
    ops = request.app[SLACK]
    form = _form(await ops.verified_body(request))
    if form.get("ssl_check") == "1":  # Slack checking the certificate when the URL is set
        return web.Response()
    user_id = _user_id(form.get("user_id"))
    response_url = _response_url(form.get("response_url"), ops.slack.api_url)
    try:
        cmd = parse(form.get("text", ""))
    except UsageError as exc:
        return json_response(replies.usage(str(exc)))
    if cmd.verb == "help":
        return json_response(replies.help_text())
    identity = ops.identity(user_id, form.get("user_name"))
    if identity is None:
        return json_response(replies.not_allowed(user_id))
    log.info("slack.command", verb=cmd.verb, user=user_id, run_id=cmd.run_id)
    ops.spawn(ops.work.command(engine_of(request), identity, cmd), response_url, f"command.{cmd.verb}")
    return web.Response()


async def _ready(answer: Answer) -> Answer:
    return answer
