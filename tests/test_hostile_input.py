"""Issue 11, points 1-5: hostile requests are the client's error (4xx), never a 500, a traceback or a
stalled loop. Raw sockets against the in-process app, so the bytes are exactly the hostile ones."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from support import rawhttp
from support.inproc import TOKENS, WEBHOOK, Daemon, alert_payload, base_config, serve
from support.slack_api import ALICE, RUNBOOKS, command_body, serve_slack, signed_headers

from daemon.config import parse_config
from daemon.kits import strictjson
from daemon.server.keys import BODIES

RUNBOOK = """
name: one
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre]}
steps:
  - id: look
    action: notify.log
    with: {message: "{{ params.job }}"}
"""

ADMIN = f"Bearer {TOKENS['admin']}"
BODY_ENDPOINTS = [
    ("/api/v1/alertmanager", f"Bearer {WEBHOOK}"),
    ("/api/v1/runs", ADMIN),
    ("/api/v1/runs/r-1/reject", ADMIN),
]


@asynccontextmanager
async def daemon(tmp_path: Path, **server: Any) -> AsyncIterator[Daemon]:
    cfg = base_config(tmp_path, server={"listen": "127.0.0.1:0", **server})
    async with serve(tmp_path, {"one": RUNBOOK}, config=parse_config(cfg)) as d:
        yield d


async def healthy(d: Daemon) -> None:
    status, body = await d.call("GET", "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})


def no_internal_errors(logs: list[dict[str, Any]]) -> None:
    assert not [e for e in logs if e["log_level"] in ("error", "critical") or "exc_info" in e], logs


# ---------------------------------------------------------------- 1. body reads


BROKEN_BODIES = {
    "gzip that is not gzip": ({"Content-Encoding": "gzip", "Content-Length": "4"}, b"\x1f\x8bxx"),
    "deflate that is not deflate": ({"Content-Encoding": "deflate", "Content-Length": "4"}, b"abcd"),
    "bad chunk size": ({"Transfer-Encoding": "chunked"}, b"zz\r\nabcd\r\n0\r\n\r\n"),
    "chunk longer than said": ({"Transfer-Encoding": "chunked"}, b"4\r\nabcdXX\r\n0\r\n\r\n"),
    "gzip, chunked": (
        {"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"},
        b"4\r\n\x1f\x8bxx\r\n0\r\n\r\n",
    ),
}


@pytest.mark.parametrize("what", sorted(BROKEN_BODIES))
async def test_a_body_that_cannot_be_read_is_400_with_one_line_and_no_traceback(
    tmp_path: Path, what: str
) -> None:
    headers, body = BROKEN_BODIES[what]
    async with daemon(tmp_path) as d:
        with capture_logs() as logs:
            for path, auth in BODY_ENDPOINTS:
                raw = rawhttp.head("POST", path, {"Authorization": auth, **headers}) + body
                answer = await rawhttp.send(d.url, raw)
                assert answer.status == 400, (what, path, answer)
                # aiohttp itself answers framing errors it meets before the handler (in plain text)
                assert answer.body.startswith(b'{"error": ') or b"{" not in answer.body, answer
        no_internal_errors(logs)
        await healthy(d)


async def test_a_transfer_coding_other_than_chunked_is_400_and_stores_nothing(tmp_path: Path) -> None:
    """An adversarial pass: aiohttp framed "gzip, chunked" as chunked and dropped the gzip, storing the
    body as if plain; a proxy in front may frame it otherwise."""
    body = json.dumps(alert_payload(job="x")).encode()
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    async with daemon(tmp_path) as d:
        for coding, status in (("gzip, chunked", 400), ("deflate,chunked", 400), ("chunked", 200)):
            head = rawhttp.head(
                "POST",
                "/api/v1/alertmanager",
                {"Authorization": f"Bearer {WEBHOOK}", "Transfer-Encoding": coding},
            )
            answer = await rawhttp.send(d.url, head + chunk)
            assert answer.status == status, (coding, answer)
        status, receipt = await d.call("GET", "/api/v1/receipts/1")
        assert status == 200 and receipt["alerts"] == 1  # the plain chunked one
        assert (await d.call("GET", "/api/v1/receipts/2"))[0] == 404


async def test_a_client_gone_mid_body_is_one_line_and_the_daemon_goes_on(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        with capture_logs() as logs:
            for path, auth in BODY_ENDPOINTS:
                head = rawhttp.head("POST", path, {"Authorization": auth, "Content-Length": "1000"})
                _reader, writer = await rawhttp.open_partial(d.url, head + b'{"runbook": ')
                await rawhttp.until(lambda: d.app[BODIES].pending == 1, "the body read to start")
                writer.close()
                await rawhttp.until(lambda: d.app[BODIES].pending == 0, "the body read to end")
        gone = [e for e in logs if e["event"] == "http.bad_body"]
        assert len(gone) == 3 and all(e["status"] == 400 for e in gone), logs
        assert all("closed the connection" in e["error"] for e in gone), gone
        no_internal_errors(logs)
        await healthy(d)


async def test_a_body_over_the_limit_is_413_even_without_a_length(tmp_path: Path) -> None:
    async with daemon(tmp_path, max_body_bytes=1000) as d:
        chunk = b"a" * 600
        chunked = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        for path, auth in BODY_ENDPOINTS:
            raw = rawhttp.head("POST", path, {"Authorization": auth, "Transfer-Encoding": "chunked"})
            answer = await rawhttp.send(d.url, raw + chunked * 2 + b"0\r\n\r\n")
            assert answer.status == 413, (path, answer)
        await healthy(d)


async def test_slack_body_errors_are_4xx_and_unsigned_bodies_are_never_read(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        now = int(sd.d.clock.now())
        signed = signed_headers(b"payload=x", now)
        for path in ("/slack/interactions", "/slack/commands"):
            raw = rawhttp.head("POST", path, {**signed, "Transfer-Encoding": "chunked"})
            answer = await rawhttp.send(sd.d.url, raw + b"4\r\nabcdXX\r\n0\r\n\r\n")  # bad chunking
            assert answer.status == 400, answer
            # Slack never compresses: refused (415) before the body is read, let alone inflated
            raw = rawhttp.head("POST", path, {**signed, "Content-Encoding": "gzip", "Content-Length": "4"})
            answer = await rawhttp.send(sd.d.url, raw + b"\x1f\x8bxx")
            assert answer.status == 415, answer
            # no signature: refused on its headers, before a byte of the body (which never comes)
            raw = rawhttp.head("POST", path, {"Content-Length": "1000"})
            reader, writer = await rawhttp.open_partial(sd.d.url, raw)
            answer = await rawhttp.read_answer(reader)
            writer.close()
            assert answer.status == 401, answer
            assert sd.d.app[BODIES].pending == 0


# ---------------------------------------------------------------- 2. Authorization not UTF-8


async def test_an_authorization_header_that_is_not_utf8_is_401_everywhere(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        endpoints = [
            ("POST", "/api/v1/alertmanager"),
            ("GET", "/api/v1/runs"),
            ("POST", "/api/v1/runs"),
            ("GET", "/api/v1/runs/r-1"),
            ("POST", "/api/v1/runs/r-1/steps/s/approve"),
            ("POST", "/api/v1/runs/r-1/reject"),
            ("GET", "/api/v1/runbooks"),
            ("GET", "/api/v1/receipts/1"),
            ("POST", "/api/v1/pause"),
            ("POST", "/api/v1/resume"),
            ("GET", "/api/v1/status"),
        ]
        for value in (b"Bearer \xff", b"Bearer \xc3\x28", b"\xff\xfe " + b"x" * 10):
            for method, path in endpoints:
                raw = rawhttp.head(method, path, {"Authorization": value, "Content-Length": "2"})
                answer = await rawhttp.send(d.url, raw + b"{}")
                assert answer.status == 401, (value, method, path, answer)


async def test_two_authorization_headers_are_401_whichever_comes_first(tmp_path: Path) -> None:
    """An adversarial pass: the first header counted, so a good token then a bad one got in (a proxy or
    a log may have read the second)."""
    async with daemon(tmp_path) as d:
        for method, path, good in [
            ("GET", "/api/v1/runs", "admin-token"),
            ("POST", "/api/v1/alertmanager", "wh-token"),
        ]:
            for first, second in ((good, "bogus"), ("bogus", good), (good, good)):
                raw = rawhttp.head(method, path, {"Authorization": f"Bearer {first}", "Content-Length": "2"})
                raw = raw.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {second}\r\n\r\n".encode(), 1)
                answer = await rawhttp.send(d.url, raw + b"{}")
                assert answer.status == 401, (method, path, first, second, answer)
                assert b"more than one Authorization header" in answer.body


async def test_expect_100_continue_is_answered_only_to_a_body_that_may_come(tmp_path: Path) -> None:
    """An adversarial pass: aiohttp's default invited every body (100 Continue) before the token or the
    size was checked, then answered 401 or 413 and lingered ~11 s draining what it had asked for."""
    async with daemon(tmp_path, max_body_bytes=4096) as d:
        body = json.dumps(alert_payload(job="x")).encode()
        refused = [
            ("/api/v1/alertmanager", "Bearer nope", 1000, 401),
            ("/api/v1/alertmanager", "Bearer wh-token", 5_000_000, 413),
            ("/api/v1/pause", None, 2, 401),
        ]
        for path, auth, length, status in refused:
            headers = {"Expect": "100-continue", "Content-Length": str(length)}
            if auth is not None:
                headers["Authorization"] = auth
            reader, writer = await rawhttp.open_partial(d.url, rawhttp.head("POST", path, headers))
            try:
                answer = await rawhttp.read_answer(reader, timeout=5)
                assert answer.status == status, (path, auth, answer)
                # not kept alive: closed once aiohttp stops waiting (2 s) for the body it never asked for
                assert await asyncio.wait_for(reader.read(), 5) == b""
            finally:
                writer.close()
        headers = {
            "Expect": "100-continue",
            "Content-Length": str(len(body)),
            "Authorization": "Bearer wh-token",
        }
        reader, writer = await rawhttp.open_partial(
            d.url, rawhttp.head("POST", "/api/v1/alertmanager", headers)
        )
        try:
            assert (await rawhttp.read_answer(reader, timeout=5)).status == 100
            writer.write(body)
            stored = await rawhttp.read_answer(reader, timeout=5)
            assert stored.status == 200 and stored.json()["status"] == "stored", stored
        finally:
            writer.close()
        await healthy(d)


# ---------------------------------------------------------------- 3. JSON that is not standard


async def test_lone_surrogates_and_non_standard_numbers_are_400(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        bodies = [
            b'{"runbook": "one", "params": {"job": "x\\ud800"}}',
            b'{"runbook": "one", "params": {"job\\udfff": "x"}}',
            b'{"runbook": "one", "params": {"job": NaN}}',
            b'{"runbook": "one", "params": {"job": Infinity}}',
            b'{"runbook": "one", "params": {"job": -Infinity}}',
            b'{"runbook": "one", "params": {"job": -1e400}}',  # legal syntax, but -Infinity once read
        ]
        for body in bodies:
            status, answer = await d.call("POST", "/api/v1/runs", data=body)
            assert status == 400 and answer == {"error": "body is not valid JSON"}, (body, answer)
        webhook = json.dumps(alert_payload(job="x"))
        for extra in (
            ', "x": NaN}',
            ', "x": Infinity}',
            ', "x": "\\ud800"}',
            ', "x": 1e400}',
            ', "x": -1e999}',
        ):
            status, answer = await d.call(
                "POST", "/api/v1/alertmanager", token="webhook", data=(webhook[:-1] + extra).encode()
            )
            assert status == 400 and "not valid JSON" in answer["error"], (extra, answer)
        for truncated in (-5, -1):  # Alertmanager's count of alerts left out: never negative
            payload = {**alert_payload(job="x"), "truncatedAlerts": truncated}
            status, answer = await d.call("POST", "/api/v1/alertmanager", token="webhook", json=payload)
            assert status == 400 and "truncatedAlerts" in json.dumps(answer), answer
        status, runs = await d.call("GET", "/api/v1/runs")
        assert runs == {"runs": []}


async def test_a_trigger_with_a_field_it_does_not_know_is_400(tmp_path: Path) -> None:
    """The OpenAPI Trigger body allows runbook and params only (additionalProperties: false); a contract
    audit found {"runbook": ..., "params": ..., "dry_run": false} started a run, the extra field ignored."""
    async with daemon(tmp_path) as d:
        for body in (
            {"runbook": "one", "params": {"job": "x"}, "dry_run": False},
            {"runbook": "one", "x": 1},
        ):
            status, answer = await d.call("POST", "/api/v1/runs", json=body)
            assert status == 400 and "unknown field(s)" in answer["error"], (body, answer)
        status, runs = await d.call("GET", "/api/v1/runs")
        assert runs == {"runs": []}


async def test_bodies_of_many_values_are_refused_without_walking_them_all(tmp_path: Path) -> None:
    """1 MiB of ``[]`` is 340,000 values: walked in Python it held the event loop a third of a second."""
    many = b'{"runbook": "one", "params": {"job": "x", "n": [' + b"[]," * 340_000 + b"[]]}}"
    async with daemon(tmp_path) as d:
        with capture_logs() as logs:
            status, answer = await d.call("POST", "/api/v1/runs", data=many)
        assert status == 400 and answer["error"] == "body is not valid JSON", answer
        (line,) = [e for e in logs if e["event"] == "http.bad_body"]
        assert f"more than {strictjson.MAX_VALUES} values" in line["detail"], line
        # the webhook: a label value "NaN" is common and fine; a NUL in a label is not (PostgreSQL)
        fine = alert_payload(job="x", summary="value NaN, Infinity")
        status, answer = await d.call("POST", "/api/v1/alertmanager", token="webhook", json=fine)
        assert status == 200, answer
        escaped = json.dumps(alert_payload(job="x", note="a literal \\u0000, not a NUL"))
        status, answer = await d.call("POST", "/api/v1/alertmanager", token="webhook", data=escaped.encode())
        assert status == 200, answer
        nul = json.dumps(alert_payload(job="x", note="a \x00 here"))
        status, answer = await d.call("POST", "/api/v1/alertmanager", token="webhook", data=nul.encode())
        assert status == 400 and "NUL" in answer["error"], answer


# ---------------------------------------------------------------- 4. depth


async def test_deep_json_is_400_on_the_api_and_the_webhook(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        deep = b'{"runbook": "one", "params": {"job": "x", "n": ' + b"[" * 40 + b"]" * 40 + b"}}"
        status, answer = await d.call("POST", "/api/v1/runs", data=deep)
        assert status == 400, answer
        webhook = json.dumps(alert_payload(job="x"))
        for depth in (250, 100_000):
            body = webhook[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
            status, answer = await d.call("POST", "/api/v1/alertmanager", token="webhook", data=body.encode())
            assert status == 400 and "not valid JSON" in answer["error"], (depth, answer)


async def test_deep_signed_slack_payloads_are_400(tmp_path: Path) -> None:
    from urllib.parse import urlencode

    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        url = sd.slack.response_url()
        deep = "[" * 50_000 + "]" * 50_000
        payload = f'{{"type": "block_actions", "user": {{"id": "{ALICE}"}}, "x": {deep}}}'
        status, text = await sd.post("/slack/interactions", urlencode({"payload": payload}).encode())
        assert status == 400, text
        value = "[" * 900 + "]" * 900  # a button value is at most 2000 characters
        click = {
            "type": "block_actions",
            "user": {"id": ALICE},
            "response_url": url,
            "actions": [{"action_id": "runbookd.approve", "value": value}],
        }
        status, text = await sd.post(
            "/slack/interactions", urlencode({"payload": json.dumps(click)}).encode()
        )
        assert status == 400, text
        status, text = await sd.post("/slack/commands", command_body("list", ALICE, url))
        assert status == 200, text  # and the endpoint still works


# ---------------------------------------------------------------- 5. slow and partial bodies


async def test_a_body_not_sent_in_time_is_408(tmp_path: Path) -> None:
    async with daemon(tmp_path, body_timeout="1s") as d:
        for path, auth in BODY_ENDPOINTS:
            head = rawhttp.head("POST", path, {"Authorization": auth, "Content-Length": "100"})
            reader, writer = await rawhttp.open_partial(d.url, head + b"{")
            answer = await rawhttp.read_answer(reader)
            writer.close()
            assert answer.status == 408, (path, answer)
        await healthy(d)


async def test_unfinished_bodies_are_bounded_and_the_daemon_answers_meanwhile(tmp_path: Path) -> None:
    async with daemon(tmp_path, max_pending_bodies=2, body_timeout="60s") as d:
        path, auth = BODY_ENDPOINTS[0]
        head = rawhttp.head("POST", path, {"Authorization": auth, "Content-Length": "100"})
        slow = [await rawhttp.open_partial(d.url, head + b"{") for _ in range(2)]
        await rawhttp.until(lambda: d.app[BODIES].pending == 2, "two bodies being read")
        answer = await rawhttp.send(d.url, head + b"{")
        assert answer.status == 503, answer
        await healthy(d)
        status, _ = await d.call("GET", "/api/v1/status")
        assert status == 200
        for _reader, writer in slow:
            writer.close()
        await rawhttp.until(lambda: d.app[BODIES].pending == 0, "the slow bodies given up")
        status, _ = await d.webhook(alert_payload(job="x"))
        assert status == 200


async def test_shutdown_gives_up_bodies_being_read(tmp_path: Path) -> None:
    async with daemon(tmp_path, body_timeout="1h") as d:
        path, auth = BODY_ENDPOINTS[0]
        head = rawhttp.head("POST", path, {"Authorization": auth, "Content-Length": "100"})
        reader, writer = await rawhttp.open_partial(d.url, head + b"{")
        await rawhttp.until(lambda: d.app[BODIES].pending == 1, "the body read to start")
        await d.app.shutdown()  # what AppRunner.cleanup does first on SIGTERM
        answer = await rawhttp.read_answer(reader)
        writer.close()
        assert answer.status == 503, answer
        assert d.app[BODIES].pending == 0
    await asyncio.sleep(0)


# ---------------------------------------------------------------- compressed bodies


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _bomb(inflated: int) -> bytes:
    """gzip of ``inflated`` zero bytes, made a MiB at a time (~1,000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    out = [packer.compress(zeros) for _ in range(inflated >> 20)]
    return b"".join(out) + packer.flush()


async def _post_webhook_encoded(d: Daemon, encoding: str, body: bytes) -> rawhttp.RawAnswer:
    """POST ``body`` to the webhook as sent, with this Content-Encoding."""
    head = rawhttp.head(
        "POST",
        "/api/v1/alertmanager",
        {
            "Authorization": f"Bearer {WEBHOOK}",
            "Content-Encoding": encoding,
            "Content-Length": str(len(body)),
        },
    )
    return await rawhttp.send(d.url, head + body)


async def test_compressed_bodies_are_read_as_sent(tmp_path: Path) -> None:
    payload = json.dumps(alert_payload(job="gz")).encode()
    deflated = zlib.compress(payload)
    raw_deflate = deflated[2:-4]  # no zlib header and trailer: what some clients send as "deflate"
    async with daemon(tmp_path) as d:
        for encoding, body in [
            ("gzip", _gzip(payload)),
            ("x-gzip", _gzip(payload[:10]) + _gzip(payload[10:])),  # two gzip members, one body
            ("deflate", deflated),
            ("deflate", raw_deflate),
            ("identity", payload),
        ]:
            answer = await _post_webhook_encoded(d, encoding, body)
            assert answer.status == 200, (encoding, answer)
            receipt = json.loads(answer.body)["receipt"]
            routed = await d.engine.routed(receipt)
            assert routed["started"] or routed["attached"], (encoding, routed)


async def test_bytes_after_a_compressed_stream_are_refused(tmp_path: Path) -> None:
    payload = json.dumps(alert_payload(job="trailing")).encode()
    async with daemon(tmp_path) as d:
        for encoding, body, says in [
            ("deflate", zlib.compress(payload) + b"{}", b"bytes follow the end of the deflate stream"),
            ("gzip", _gzip(payload) + b"{}", b"not valid gzip"),  # read as a second member: not gzip
        ]:
            answer = await _post_webhook_encoded(d, encoding, body)
            assert answer.status == 400 and says in answer.body, (encoding, answer)
        async with d.engine.store.transaction() as tx:
            assert await tx.last_inbox_seq() == 0  # nothing stored
        await healthy(d)


async def test_a_compressed_body_is_never_inflated_past_the_limit(tmp_path: Path) -> None:
    bomb = _bomb(64 << 20)  # 64 MiB of zeros in ~64 kB
    async with daemon(tmp_path, max_body_bytes=200_000) as d:
        with capture_logs() as logs:
            for path, auth in BODY_ENDPOINTS:
                head = rawhttp.head(
                    "POST",
                    path,
                    {"Authorization": auth, "Content-Encoding": "gzip", "Content-Length": str(len(bomb))},
                )
                answer = await rawhttp.send(d.url, head + bomb)
                assert answer.status == 413, (path, answer)
                assert b"once decoded (gzip)" in answer.body, answer
            head = rawhttp.head(
                "POST",
                "/api/v1/alertmanager",
                {"Content-Encoding": "br", "Authorization": f"Bearer {WEBHOOK}", "Content-Length": "4"},
            )
            answer = await rawhttp.send(d.url, head + b"abcd")
            assert answer.status == 400 and b"is not gzip or deflate" in answer.body, answer
        no_internal_errors(logs)
        await healthy(d)
    # aiohttp itself would inflate a body whole on the event loop, even one it only drains after a 401
    # (1 MiB of gzip is 1 GiB): the server must leave inflating to BodyGate.
    assert d.app[BODIES].limit == 200_000


async def test_unsigned_slack_bodies_cannot_take_the_webhooks_slots(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS, server={"max_pending_bodies": 2, "body_timeout": "60s"}) as sd:
        d = sd.d
        now = int(d.clock.now())
        # well-formed signature headers (checked only once the body is read) and a body that never comes
        forged = {**signed_headers(b"x" * 100, now), "Content-Length": "100"}
        slow = [
            await rawhttp.open_partial(d.url, rawhttp.head("POST", "/slack/commands", forged))
            for _ in range(3)
        ]
        await rawhttp.until(lambda: d.app[BODIES].pending == 2, "two Slack bodies being read")
        # the third Slack body is refused (its own pool is full) ...
        answer = await rawhttp.read_answer(slow[2][0])
        assert answer.status == 503, answer
        # ... but Alertmanager's webhook and the API still read theirs
        status, _ = await d.webhook(alert_payload(job="while-slack-hangs"))
        assert status == 200
        status, _ = await d.call("POST", "/api/v1/runs/r-none/reject", json={"reason": "x"})
        assert status == 404
        for _reader, writer in slow:
            writer.close()
        await rawhttp.until(lambda: d.app[BODIES].pending == 0, "the Slack bodies given up")


async def test_a_wrong_method_says_which_are_allowed_and_unknown_params_are_named_briefly(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path) as d:
        async with d.session.delete(f"{d.url}/api/v1/runs", headers={"Authorization": ADMIN}) as resp:
            assert resp.status == 405
            assert {"GET", "POST"} <= {m.strip() for m in resp.headers["Allow"].split(",")}, resp.headers
            assert (await resp.json())["error"] == "Method Not Allowed"
        # 90,000 unknown param names made a 700 kB answer: the first ten are named, the rest counted
        params = {"job": "x", **{f"p{i:05d}": "v" for i in range(15_000)}}
        body = json.dumps({"runbook": "one", "params": params}).encode()
        status, answer = await d.call("POST", "/api/v1/runs", data=body)
        assert status == 400, answer
        assert answer["error"].startswith("unknown param(s) p00000, p00001,"), answer
        assert "and 14990 more" in answer["error"] and len(answer["error"]) < 400, answer
