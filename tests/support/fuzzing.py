"""A real ``runbookd serve`` for fuzzing (Slack on, Slack's API on a closed port), and Hypothesis
strategies for hostile webhook and Slack bodies, Slack's signed correctly so they reach the parser."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from hypothesis import strategies as st

from .ports import closed_port
from .runbookd import RunbookdProcess, daemon_config

SIGNING_SECRET = "fuzz-signing-secret"
SLACK_USER = "U0FUZZ001"
SLACK_ORIGIN = f"http://127.0.0.1:{closed_port()}"
"""Slack for the fuzzed daemon: nothing listens there."""
RESPOND_URL = f"{SLACK_ORIGIN}/respond"
"""Where runbookd answers fuzzed Slack requests: on the configured Slack's origin (``slack.api_url``'s),
as runbookd requires, so valid-looking requests get past the response_url check to the work."""

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


def fuzz_daemon(workdir: Path) -> RunbookdProcess:
    folder = workdir / "runbooks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "one.yaml").write_text(RUNBOOK)
    cfg: dict[str, Any] = daemon_config(
        folder,
        prometheus=f"http://127.0.0.1:{closed_port()}",
        alertmanager=f"http://127.0.0.1:{closed_port()}",
        dry_run=True,
    )
    cfg["approvers"] = {"sre": ["admin", f"slack:{SLACK_USER}"]}
    cfg["slack"] = {
        "bot_token": {"env": "RUNBOOKD_SLACK_BOT_TOKEN"},
        "signing_secret": {"env": "RUNBOOKD_SLACK_SIGNING_SECRET"},
        "api_url": f"{SLACK_ORIGIN}/api/",
        "timeout": "1s",
    }
    cfg["server"] = {"listen": "127.0.0.1:0", "max_body_bytes": 65536}
    env = {"RUNBOOKD_SLACK_BOT_TOKEN": "xoxb-fuzz", "RUNBOOKD_SLACK_SIGNING_SECRET": SIGNING_SECRET}
    return RunbookdProcess(workdir, cfg, env=env)


def slack_headers(body: bytes) -> dict[str, str]:
    """Signed as Slack signs (slack_sdk's signer wants UTF-8; hostile bodies need not be)."""
    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


# ---------------------------------------------------------------- strategies

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "x\ud800", "\udfff", "\x00", "a" * 5000, "{{ 7*7 }}", "../../etc", "NaN"]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), hostile_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)),
    max_leaves=20,
)


foreign_urls = st.sampled_from(
    [
        f"http://127.0.0.1:{closed_port()}/steal",
        RESPOND_URL.replace("http://", "http://user@"),
        RESPOND_URL.replace("http://", "https://"),
        SLACK_ORIGIN + ".evil.example/x",
        RESPOND_URL + "\t",
        "file:///etc/passwd",
    ]
)
"""response_urls off the configured Slack, each refused with 400 (loopback only, should one slip through)."""


def _dumps(value: Any) -> str:
    """JSON as a hostile client writes it: NaN and Infinity left in, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True)


def _deep(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


labels = st.dictionaries(hostile_text, hostile_text, max_size=5).map(
    lambda d: {**d, "alertname": d.get("alertname", "PrometheusScrapeFailure")}
)
alerts = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "other"]), "labels": labels},
    optional={
        "annotations": st.dictionaries(hostile_text, json_values, max_size=3),
        "startsAt": hostile_text,
        "fingerprint": hostile_text,
        "extra": json_values,
    },
)
webhook_objects = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "x"]), "alerts": st.lists(alerts, max_size=4)},
    optional={"version": json_values, "groupLabels": json_values, "truncatedAlerts": json_values},
)


@st.composite
def webhook_bodies(draw: st.DrawFn) -> bytes:
    """Webhook-shaped JSON with hostile values, NaN and deep nesting spliced in, or arbitrary bytes."""
    kind = draw(st.sampled_from(["object", "object", "deep", "nan", "bytes", "value"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "value":
        return _dumps(draw(json_values)).encode("utf-8", "surrogatepass")
    text = _dumps(draw(webhook_objects))
    if kind == "deep":
        text = text[:-1] + f', "x": {_deep(draw(st.integers(30, 3000)))}}}'
    elif kind == "nan":
        text = text[:-1] + f', "x": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))}}}'
    return text.encode("utf-8", "surrogatepass")


def _button_value() -> st.SearchStrategy[str]:
    return st.one_of(
        hostile_text,
        st.builds(lambda d: _deep(d, '{"run": "r"}'), st.integers(1, 990)),
        st.builds(
            _dumps,
            st.fixed_dictionaries({"run": json_values, "step": hostile_text, "plan_hash": json_values}),
        ),
    )


@st.composite
def interaction_payloads(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["click", "submission", "deep", "value"]))
    if kind == "deep":
        return _deep(draw(st.integers(30, 5000)), "{}")
    if kind == "value":
        return _dumps(draw(json_values))
    user = {"id": draw(st.one_of(st.just(SLACK_USER), hostile_text)), "username": draw(hostile_text)}
    url = RESPOND_URL
    if kind == "click":
        action = {
            "action_id": draw(st.sampled_from(["runbookd.approve", "runbookd.reject", "other"])),
            "value": draw(_button_value()),
        }
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": user,
            "response_url": draw(st.one_of(st.just(url), foreign_urls, hostile_text)),
            "trigger_id": draw(hostile_text),
            "actions": draw(st.one_of(st.just([action]), json_values)),
        }
    else:
        meta = draw(
            st.one_of(
                st.builds(_dumps, st.fixed_dictionaries({"run": hostile_text, "response_url": st.just(url)})),
                hostile_text,
            )
        )
        payload = {
            "type": "view_submission",
            "user": user,
            "view": {
                "callback_id": "runbookd.reject_reason",
                "private_metadata": meta,
                "state": draw(
                    st.one_of(json_values, st.just({"values": {"reason": {"reason": {"value": "no"}}}}))
                ),
            },
        }
    return _dumps(payload)


@st.composite
def slack_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """(path, form body): interactions with hostile payloads, commands with hostile text, raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["/slack/interactions", "/slack/commands"])), draw(
            st.binary(max_size=200)
        )
    if draw(st.booleans()):
        payload = draw(interaction_payloads())
        return "/slack/interactions", urlencode(
            {"payload": payload}, encoding="utf-8", errors="surrogatepass"
        ).encode()
    words = st.sampled_from(
        ["approve", "reject", "show", "list", "pause", "resume", "help", "r-1", "--step", "x"]
    )
    text = " ".join(draw(st.lists(st.one_of(words, hostile_text), max_size=5)))
    form = {
        "command": "/runbook",
        "text": text,
        "user_id": draw(st.one_of(st.just(SLACK_USER), hostile_text)),
        "user_name": draw(hostile_text),
        "response_url": RESPOND_URL,
    }
    return "/slack/commands", urlencode(form, encoding="utf-8", errors="surrogatepass").encode()


def finite(value: Any) -> bool:
    """True if a parsed JSON answer holds no NaN or Infinity (standard JSON)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True
