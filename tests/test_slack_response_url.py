"""runbookd answers Slack only on the Slack it is configured for: a response_url elsewhere is refused (400)
before any work starts, and an answer never follows a redirect.

Slack's requests are signed, but runbookd runs inside a cluster: with a leaked signing secret, a
response_url of the attacker's choosing would make runbookd POST to internal services (SSRF)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs
from support.ports import closed_port, free_port
from support.slack_api import (
    ALICE,
    EVE,
    RUNBOOKS,
    SlackDaemon,
    click,
    command_body,
    elements,
    interaction_body,
    serve_slack,
    start_run,
    submission,
)

from daemon.notify import slack_messages as msgs
from daemon.notify.slack_delivery import RetryPolicy, SlackApi, SlackRefused, response_url_allowed

SLACK_API = "https://slack.com/api/"


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/actions/T0001/1234/abcd",
        "https://hooks.slack.com/commands/T0001/1234/abcd",
        "https://HOOKS.Slack.COM/commands/T0001/1234/abcd",  # hosts compare case-insensitively
        "https://slack.com/x",  # the API's own host
        "https://hooks.slack.com/commands/T0001/1#fragment",
        "https://hooks.slack.com?@evil.example/",  # a query: the host is still hooks.slack.com
    ],
)
def test_slack_hosts_are_accepted(url: str) -> None:
    assert response_url_allowed(url, SLACK_API)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x",
        "https://hooks.slack.com.evil.example/x",
        "https://evil.example/hooks.slack.com/x",
        "https://evilslack.com/x",
        "https://hooks.evil.example/x",
        "https://hooks.hooks.slack.com/x",
        "https://api.slack.com/x",
        "https://hooks.slack.com.:443/x",
        "https://hooks.slack.com:443/x",  # the rule is the netloc exactly: no port where the API has none
        "https://hooks.slack.com:8443/x",
        "https://hooks.slack.com:/x",
        "https://hooks.slack.com:99999/x",
        "https://hooks.slack.com:x/x",
        "http://hooks.slack.com/x",  # not the API's scheme
        "ftp://hooks.slack.com/x",
        "file:///etc/passwd",
        "https://user@hooks.slack.com/x",
        "https://user:pass@hooks.slack.com/x",
        "https://@hooks.slack.com/x",
        "https://hooks.slack.com@evil.example/x",
        "https://hooks.slack.com\\@evil.example/x",
        "https://evil.example#@hooks.slack.com/x",
        "https://hoo\u212aks.slack.com/x",  # KELVIN SIGN: lower() makes it "k"
        "https://hooks.sl\u0430ck.com/x",  # CYRILLIC SMALL LETTER A
        "https://hooks.slack.com/x y",
        "https://hooks.slack.com/x\ty",  # urlsplit drops tab, CR and LF: refused before it can
        "https://hooks.slack.com/x\r\nHost: evil.example",
        "\thttps://hooks.slack.com/x",
        " https://hooks.slack.com/x",
        "https://hooks.slack.com/x\x00",
        "https://hooks.slack.com/x\x85",
        "https://hooks.slack.com/x\u2028",
        "https://[::1/x",  # urlsplit cannot parse it
        "https:hooks.slack.com/x",
        "https:///hooks.slack.com/x",
        "//hooks.slack.com/x",
        "hooks.slack.com/x",
        "https://hooks.slack.com/" + "a" * 2048,
        "",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    assert not response_url_allowed(url, SLACK_API)


def test_the_rule_follows_the_configured_slack() -> None:
    gov = "https://slack-gov.com/api/"
    assert response_url_allowed("https://hooks.slack-gov.com/commands/T1/2/x", gov)
    assert not response_url_allowed("https://hooks.slack.com/commands/T1/2/x", gov)
    local = "http://127.0.0.1:8080/api/"  # a port in api_url: the same port, always
    assert response_url_allowed("http://127.0.0.1:8080/respond/1", local)
    assert response_url_allowed("http://hooks.127.0.0.1:8080/respond/1", local)
    for url in ("http://127.0.0.1:8081/respond/1", "http://127.0.0.1/respond/1", "https://127.0.0.1:8080/x"):
        assert not response_url_allowed(url, local), url
    for api in ("slack.com/api/", "ftp://slack.com/api/", "https://user@slack.com/api/", ""):
        assert not response_url_allowed("https://hooks.slack.com/x", api), api  # refused, never open


# ---------------------------------------------------------------- requests with a foreign response_url


@dataclass
class Catcher:
    """An HTTP server on loopback standing for an internal service: records every request it gets."""

    port: int = 0
    got: list[tuple[str, str]] = field(default_factory=list)

    async def _any(self, request: web.Request) -> web.Response:
        self.got.append((request.method, request.path))
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/steal"


@pytest.fixture
async def catcher() -> AsyncIterator[Catcher]:
    c = Catcher()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", c._any)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    c.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", c.port).start()
    yield c
    await runner.cleanup()


def foreign_urls(sd: SlackDaemon, catcher: Catcher) -> list[str]:
    """Loopback ones first: were they ever accepted (as they were before the rule), the test fails on
    them, before a URL that would need DNS is tried."""
    slack = sd.slack.port
    return [
        catcher.url,  # another service, same host
        f"http://localhost:{catcher.port}/steal",
        f"http://user@127.0.0.1:{slack}/respond/9001",  # the right origin, with userinfo
        f"https://127.0.0.1:{slack}/respond/9002",  # the right host and port, another scheme
        f"http://127.0.0.1:{slack}.evil.example/x",
        "https://evil.example/x",
        "https://hooks.slack.com.evil.example/x",
        "https://user@hooks.slack.com/x",
    ]


async def test_a_signed_request_with_a_foreign_response_url_is_refused_and_changes_nothing(
    tmp_path: Path, catcher: Catcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        spawned: list[str] = []
        spawn = sd.ops.spawn

        def recording(work: Coroutine[Any, Any, Any], response_url: str | None, name: str) -> None:
            spawned.append(name)
            spawn(work, response_url, name)

        monkeypatch.setattr(sd.ops, "spawn", recording)
        run = await start_run(sd)
        approve = str(elements(sd.top())[msgs.APPROVE]["value"])
        reject = str(elements(sd.top())[msgs.REJECT]["value"])
        with capture_logs() as logs:
            for url in foreign_urls(sd, catcher):
                meta = json.dumps({"run": run["id"], "step": "look", "response_url": url})
                requests = [
                    ("/slack/commands", command_body("pause", ALICE, url)),
                    ("/slack/commands", command_body("help", EVE, url)),
                    ("/slack/interactions", interaction_body(click(ALICE, msgs.APPROVE, approve, url))),
                    ("/slack/interactions", interaction_body(click(ALICE, msgs.REJECT, reject, url))),
                    ("/slack/interactions", interaction_body(click(EVE, msgs.APPROVE, approve, url))),
                    ("/slack/interactions", interaction_body(submission(ALICE, meta, "stop"))),
                ]
                for path, body in requests:
                    status, text = await sd.post(path, body)
                    assert status == 400, (url, path, status, text)
                    assert "invalid response_url" in json.loads(text)["error"], text
                    assert spawned == [], (url, path)  # no work was started
        await sd.settle()
        assert catcher.got == []
        assert sd.slack.answers == [] and sd.slack.calls_of("views.open") == []
        assert not await sd.d.engine.is_paused()
        now = await sd.d.run(run["id"])
        assert (now["state"], now["current_step"]) == (run["state"], run["current_step"])
        assert [s["approvals"] for s in now["steps"]] == [s["approvals"] for s in run["steps"]]
        refused = [e for e in logs if e["event"] == "slack.foreign_response_url"]
        assert len(refused) == 6 * len(foreign_urls(sd, catcher))
        assert {e["log_level"] for e in refused} == {"warning"}

        # a response_url on the configured Slack still works, end to end
        _, _, url = await sd.command("pause", ALICE)
        assert "paused runbookd" in sd.slack.answers_to(url)[0]["text"]
        assert await sd.d.engine.is_paused() and spawned == ["command.pause"]
        assert catcher.got == []


async def test_the_delivery_side_refuses_a_foreign_url_too(catcher: Catcher) -> None:
    """The second line: SlackApi.respond itself answers only on its own Slack, whoever calls it."""
    api = SlackApi(SecretStr("xoxb-unused"), f"http://127.0.0.1:{closed_port()}/api/", 1, RetryPolicy())
    with pytest.raises(SlackRefused, match="not on the configured Slack"):
        await api.respond(catcher.url, {"text": "hello"})
    assert catcher.got == []


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_an_answer_never_follows_a_redirect(tmp_path: Path, catcher: Catcher, status: int) -> None:
    """aiohttp follows redirects by default (307 and 308 re-POST the body): a response_url on Slack's
    host must not hand the answer, or the request, to anywhere else."""
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        sd.slack.redirect_next(catcher.url, status)
        with capture_logs() as logs:
            status_, _, url = await sd.command("pause", ALICE)
        assert status_ == 200
        assert await sd.d.engine.is_paused()  # the work was done; its answer was not redirected
        assert catcher.got == [] and sd.slack.answers_to(url) == []
        (failed,) = [e for e in logs if e["event"] == "slack.answer_failed"]
        assert f"HTTP {status}" in failed["error"]

        _, _, url = await sd.command("resume", ALICE)  # the next answer, not redirected, arrives
        assert "resumed runbookd" in sd.slack.answers_to(url)[0]["text"]
