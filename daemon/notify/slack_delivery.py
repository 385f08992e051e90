"""Calls to Slack with bounded retries: the Web API (messages, dialogs) and ``response_url`` answers.

Slack being slow, down or rate-limiting must never hold up a run: every call has a timeout, 429 is retried
after the ``Retry-After`` Slack asks for, 5xx and connection errors with exponential backoff, and after
``RetryPolicy.attempts`` tries the caller gets ``SlackUnavailable``. Other refusals (a 4xx, ``ok: false``)
are not retried: the same request would be refused again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from daemon.errors import RunbookdError

T = TypeVar("T")
log = structlog.get_logger("runbookd.slack")

# slack_sdk logs request bodies (response URLs included) at debug level; keep it to warnings.
_SDK_LOG = logging.getLogger("runbookd.slack_sdk")
_SDK_LOG.setLevel(logging.WARNING)


class SlackError(RunbookdError):
    """A message could not be delivered to Slack."""


class SlackUnavailable(SlackError):
    """Slack kept failing (5xx, 429, timeouts, connection errors) for every attempt."""


class SlackRefused(SlackError):
    """Slack refused the request itself (4xx or ``ok: false``): retrying would not help."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries per call, the first included."""
    first_delay: float = 1.0
    """Seconds before the second try; doubled for each further one."""
    max_delay: float = 30.0
    """Upper bound on one backoff delay, in seconds."""
    max_retry_after: float = 120.0
    """Upper bound on a 429's Retry-After, in seconds: a longer wait is not worth holding a notice for."""

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))

    def after_429(self, retry_after: str | None, attempt: int) -> float:
        try:
            seconds = float(retry_after) if retry_after is not None else self.backoff(attempt)
        except ValueError:
            seconds = self.backoff(attempt)
        return min(max(seconds, 0.0), self.max_retry_after)


def _retry_delay(exc: BaseException, policy: RetryPolicy, attempt: int, what: str) -> float:
    """How long to wait before the next try, or raise SlackRefused when retrying cannot help."""
    if isinstance(exc, SlackApiError):
        status = int(exc.response.status_code)
        if status == 429:
            return policy.after_429(exc.response.headers.get("Retry-After"), attempt)
        if status >= 500:
            return policy.backoff(attempt)
        data = exc.response.data
        error = data.get("error") if isinstance(data, dict) else None
        raise SlackRefused(f"Slack refused {what}: HTTP {status} {error or ''}".strip()) from exc
    return policy.backoff(attempt)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str) -> T:
    """Run ``call`` until it succeeds, Slack refuses it, or the policy's attempts are used up."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            delay = _retry_delay(exc, policy, attempt, what)
            problem = _describe(exc)
            if attempt == policy.attempts:
                raise SlackUnavailable(f"{what} failed {attempt} times; last: {problem}") from exc
            log.warning("slack.retry", call=what, attempt=attempt, delay=round(delay, 2), problem=problem)
            await asyncio.sleep(delay)
    raise SlackUnavailable(f"{what}: no attempt allowed (attempts={policy.attempts})")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


class _ResponseFailed(aiohttp.ClientError):
    """A response_url answered 429 or 5xx (mapped onto the retry rules of the Web API)."""


class SlackApi:
    """The few Web API methods runbookd uses, each retried under one policy."""

    def __init__(self, token: SecretStr, base_url: str, timeout: float, policy: RetryPolicy) -> None:
        self.policy = policy
        self._timeout = max(1, math.ceil(timeout))
        self._client = AsyncWebClient(
            token=token.get_secret_value(),
            base_url=base_url,
            timeout=self._timeout,
            retry_handlers=[],  # retries are ours: bounded, and they honour Retry-After
            logger=_SDK_LOG,
        )

    async def post_message(
        self, channel: str, text: str, blocks: list[dict[str, Any]], **extra: Any
    ) -> dict[str, Any]:
        """Post a message; returns Slack's answer (``channel`` ID and ``ts``)."""

        async def call() -> dict[str, Any]:
            resp = await self._client.chat_postMessage(channel=channel, text=text, blocks=blocks, **extra)
            return dict(resp.data) if isinstance(resp.data, dict) else {}

        return await with_retries(call, self.policy, "chat.postMessage")

    async def update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        async def call() -> None:
            await self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

        await with_retries(call, self.policy, "chat.update")

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """Open a modal. A trigger id lives 3 seconds, so this gets one quick retry at most."""
        quick = RetryPolicy(
            attempts=min(2, self.policy.attempts), first_delay=0.2, max_delay=0.5, max_retry_after=1
        )

        async def call() -> None:
            await self._client.views_open(trigger_id=trigger_id, view=view)

        await with_retries(call, quick, "views.open")

    async def respond(self, response_url: str, message: dict[str, Any]) -> None:
        """Answer one click or command through its response_url (valid 30 minutes, 5 uses)."""
        client = AsyncWebhookClient(response_url, timeout=self._timeout, retry_handlers=[], logger=_SDK_LOG)

        async def call() -> None:
            resp = await client.send(
                text=message.get("text"),
                blocks=message.get("blocks"),
                response_type=message.get("response_type", "ephemeral"),
                replace_original=False,
            )
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _ResponseFailed(f"response_url answered {resp.status_code}")
            if resp.status_code >= 400:
                raise SlackRefused(f"response_url refused the answer: HTTP {resp.status_code}")

        await with_retries(call, self.policy, "response_url")
