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
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

import aiohttp
import structlog
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from daemon.errors import RunbookdError
from daemon.kits import strictjson

T = TypeVar("T")
log = structlog.get_logger("runbookd.slack")

# slack_sdk logs request bodies at debug level; keep it to warnings.
_SDK_LOG = logging.getLogger("runbookd.slack_sdk")
_SDK_LOG.setLevel(logging.WARNING)


MAX_RESPONSE_URL = 2048
"""A response_url this long or longer is refused (Slack's are about 100 characters)."""
_UNSAFE_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
"""Whitespace and control characters: urlsplit silently drops some (tab, CR, LF) and strips others at
the ends, so a URL holding one may not be the URL that gets checked."""


def _http_parts(url: str) -> SplitResult | None:
    """``url`` split, when it is an http(s) URL with an ASCII host, no userinfo and a valid port; else
    None (also for anything urlsplit cannot parse)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number from 0 to 65535 raises ValueError here
    except ValueError:
        return None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not parts.netloc.isascii()  # before lower(): "\u212a" (Kelvin sign) lower-cases to "k"
        or "@" in parts.netloc
    ):
        return None
    return parts


def response_url_allowed(url: str, api_url: str) -> bool:
    """Whether runbookd may POST to ``url`` as a ``response_url``: only on the Slack it is configured for.

    Slack's response_urls are on ``hooks.`` + the Web API's host (``https://hooks.slack.com/commands/...``
    for ``https://slack.com/api/``; GovSlack's on ``hooks.slack-gov.com``). Accepting any URL would let a
    forged request (a leaked signing secret, a signature bug) make runbookd POST to services inside its
    cluster. So ``url`` must be shorter than ``MAX_RESPONSE_URL`` with no whitespace or control
    character, have ``api_url``'s scheme (http or https), no userinfo, and a host[:port] that is exactly,
    case aside, ``api_url``'s or ``hooks.`` + ``api_url``'s host (with its port, if it names one)."""
    if len(url) >= MAX_RESPONSE_URL or _UNSAFE_CHARS.search(url):
        return False
    parts, api = _http_parts(url), _http_parts(api_url)
    if parts is None or api is None or parts.scheme != api.scheme:
        return False
    slack = api.netloc.lower()  # host[:port]: _http_parts refused userinfo
    return parts.netloc.lower() in (slack, "hooks." + slack)


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


_RESPOND_HEADERS = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "runbookd"}


class _ResponseFailed(aiohttp.ClientError):
    """A response_url answered 429 or 5xx (mapped onto the retry rules of the Web API)."""


class SlackApi:
    """The few Web API methods runbookd uses, each retried under one policy."""

    def __init__(self, token: SecretStr, base_url: str, timeout: float, policy: RetryPolicy) -> None:
        self.policy = policy
        self._base_url = base_url
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
        """Answer one click or command through its response_url (valid 30 minutes, 5 uses).

        Only to a response_url on the configured Slack (``response_url_allowed``: the handlers refuse the
        others already, this is the second line), and never through a redirect. aiohttp follows redirects
        unless told not to (a 307 or 308 even re-POSTs the body wherever it points) and slack_sdk's webhook
        client cannot tell it, so this POST is aiohttp's own, with ``allow_redirects=False``; a 3xx is a
        refusal."""
        if not response_url_allowed(response_url, self._base_url):
            raise SlackRefused("response_url is not on the configured Slack: not answered")
        fields = {
            "text": message.get("text"),
            "blocks": message.get("blocks"),
            "response_type": message.get("response_type", "ephemeral"),
            "replace_original": False,
        }
        body = strictjson.dumps({k: v for k, v in fields.items() if v is not None})  # as slack_sdk sent it
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=_RESPOND_HEADERS) as session:

            async def call() -> None:
                async with session.post(response_url, data=body, allow_redirects=False) as resp:
                    status = resp.status
                if status == 429 or status >= 500:
                    raise _ResponseFailed(f"response_url answered {status}")
                if status >= 300:
                    raise SlackRefused(f"response_url refused the answer: HTTP {status}")

            await with_retries(call, self.policy, "response_url")
