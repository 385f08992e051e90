"""Hostile requests on Slack's endpoints, found by the adversarial pass:

- Slack never compresses its requests, yet a forged one (current timestamp, well-formed signature header)
  with 1 kB of gzip had 1 MiB inflated and HMAC-checked on the event loop before its 401 (~4 ms each: a
  flood held ``/healthz`` up for half a second). A compressed request is refused (415) before its body is
  read.
- A correctly signed body that is not UTF-8 was answered 401 and logged as a forged signature, because the
  signature check decoded the body. The HMAC is checked over the bytes as sent; such a request is a
  malformed one (400), and nobody is told a signature was forged.
"""

from __future__ import annotations

import json
import secrets
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from structlog.testing import capture_logs
from support import rawhttp
from support.slack_api import ALICE, RUNBOOKS, SlackDaemon, command_body, serve_slack, signed_headers

from daemon.server.keys import BODIES

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

PATHS = ("/slack/interactions", "/slack/commands")
FORM = "application/x-www-form-urlencoded"


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _forged(now: int) -> dict[str, str]:
    """Signature headers that pass every check short of the HMAC: a current timestamp, v0= and 64 hex."""
    return {
        "X-Slack-Request-Timestamp": str(now),
        "X-Slack-Signature": "v0=" + secrets.token_hex(32),
        "Content-Type": FORM,
    }


async def _healthy_and_unpaused(sd: SlackDaemon) -> None:
    assert await sd.d.call("GET", "/healthz", token=None) == (200, {"status": "ok"})
    status, body = await sd.d.call("GET", "/api/v1/status")
    assert status == 200 and body["paused"] is False, body


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_compressed_slack_requests_are_refused_before_their_body_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        gate = sd.d.app[BODIES]
        inflated: list[str] = []
        inflate = gate._inflate

        def spy(raw: bytes, encoding: str) -> bytes:
            inflated.append(encoding)
            return inflate(raw, encoding)

        monkeypatch.setattr(gate, "_inflate", spy)
        now = int(sd.d.clock.now())
        bomb = _gzip(bytes(1 << 20))  # the pass's body: ~1 kB of gzip, 1 MiB once inflated
        encodings = ["gzip", "x-gzip", "deflate", "br", " GZIP ", "identity, gzip"]
        with capture_logs() as logs:
            for path in PATHS:
                for encoding in encodings:
                    headers = {**_forged(now), "Content-Encoding": encoding, "Content-Length": str(len(bomb))}
                    answer = await rawhttp.send(sd.d.url, rawhttp.head("POST", path, headers) + bomb)
                    assert answer.status == 415, (path, encoding, answer)
                    assert "Content-Encoding" in answer.json()["error"], answer
                # refused on its headers: the answer comes though the body never does
                headers = {**_forged(now), "Content-Encoding": "gzip", "Content-Length": "100000"}
                reader, writer = await rawhttp.open_partial(sd.d.url, rawhttp.head("POST", path, headers))
                try:
                    answer = await rawhttp.read_answer(reader, timeout=5)
                finally:
                    writer.close()
                assert answer.status == 415, answer
                assert gate.pending == 0
        assert inflated == []
        refused = _events(logs, "slack.refused_request")
        assert len(refused) == 2 * (len(encodings) + 1), logs
        assert {e["error"] for e in refused} == {"compressed body (Content-Encoding)"}  # one kind, one limit
        assert not _events(logs, "slack.unverified_request") and not _events(logs, "http.bad_body"), logs

        # Correctly signed and compressed (signed over the bytes sent, or over what they inflate to):
        # refused all the same, and nothing is carried out.
        url = sd.slack.response_url()
        body = command_body("pause", ALICE, url)
        for signed_over in (_gzip(body), body):
            headers = {**signed_headers(signed_over, now), "Content-Encoding": "gzip"}
            async with sd.d.session.post(
                sd.d.url + "/slack/commands", data=_gzip(body), headers=headers
            ) as r:
                assert r.status == 415, await r.text()
                assert r.headers["Accept-Encoding"] == "identity"  # RFC 9110, 15.5.16
                assert r.content_type == "application/json" and "error" in await r.json()
        await sd.settle()
        assert inflated == [] and sd.slack.answers == []
        await _healthy_and_unpaused(sd)

        # identity, said or not, is how Slack sends: accepted
        for said in ({"Content-Encoding": "identity"}, {}):
            body = command_body("pause", ALICE, url)
            stamp = int(sd.d.clock.now())
            headers = {**signed_headers(body, stamp), **said}
            status, text = await sd.post("/slack/commands", body, headers=headers)
            assert status == 200, text
            await sd.settle()
            assert (await sd.d.call("GET", "/api/v1/status"))[1]["paused"] is True
            assert (await sd.d.call("POST", "/api/v1/resume"))[0] == 200
            sd.d.clock.advance(1)  # a new timestamp, so not a replay of the first


async def test_a_signed_body_that_is_not_utf8_is_malformed_not_forged(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        url = quote(sd.slack.response_url(), safe="").encode()
        command = b"command=%2Frunbook&text=pause\xff&user_id=" + ALICE.encode() + b"&response_url=" + url
        bodies = [("/slack/commands", command), ("/slack/interactions", b"payload=\xff\xfe")]
        now = int(sd.d.clock.now())
        with capture_logs() as logs:
            for path, body in bodies:
                status, text = await sd.post(path, body, headers=signed_headers(body, now))
                assert status == 400, (path, status, text)
                assert (
                    json.loads(text)["error"]
                    == "expected a form body (application/x-www-form-urlencoded, UTF-8)"
                )
        assert not _events(logs, "slack.unverified_request"), logs
        await sd.settle()
        assert sd.slack.answers == []
        await _healthy_and_unpaused(sd)

        # signed with another secret, the same bytes are what they always were: forged, 401
        with capture_logs() as logs:
            for path, body in bodies:
                headers = signed_headers(body, now, secret="not-the-signing-secret")
                status, text = await sd.post(path, body, headers=headers)
                assert status == 401 and "Slack signature" in json.loads(text)["error"], text
        assert len(_events(logs, "slack.unverified_request")) == 2, logs
        await _healthy_and_unpaused(sd)
