"""kubernetes.pod_logs: a container's recent log lines, bounded and with secrets redacted.

The log is read through the API server's log subresource with ``tailLines``, ``sinceSeconds`` and
``limitBytes`` (so a chatty container cannot make the API server or runbookd buffer megabytes), and
runbookd itself reads no more than ``max_bytes`` of the answer. Every line is passed through
``daemon.kits.redaction`` before it lands in a step's output, Slack or the API, and over-long lines are
cut: what an operator sees is enough to tell why, never a credential.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.clients.kubernetes import KubernetesClient
from daemon.kits.durations import Duration, format_duration
from daemon.kits.names import DnsLabel, DnsSubdomain
from daemon.kits.redaction import redact

MAX_LINE_CHARS = 1000
"""A longer line is cut (with a marker): one stack dump must not fill the whole output."""


class PodLogsParams(Params):
    namespace: DnsLabel
    pod: DnsSubdomain
    container: DnsLabel | None = None
    """Required when the pod has several containers (the API server says which it has otherwise)."""
    tail_lines: int = Field(100, ge=1, le=2000)
    """The last this-many lines."""
    since: Duration | None = None
    """Only lines written within this long (e.g. 1h)."""
    max_bytes: int = Field(32 * 1024, ge=1024, le=256 * 1024)
    """Read at most this much of the log (the API server stops there too: limitBytes)."""
    max_lines: int = Field(100, ge=1, le=2000)
    """Keep at most this many lines in the output (the last ones)."""

    @field_validator("since")
    @classmethod
    def _since(cls, v: float | None) -> float | None:
        if v is not None and not 1 <= v <= 7 * 86400:
            raise ValueError("since is between 1s and 7d")
        return v


@dataclass(frozen=True)
class LogExcerpt:
    lines: list[str]
    """Redacted, each at most MAX_LINE_CHARS."""
    truncated: bool
    """Lines were dropped (max_lines, or the byte limit cut the log)."""
    bytes_read: int


def excerpt(text: str, *, max_lines: int, byte_limit_hit: bool) -> LogExcerpt:
    """The last ``max_lines`` lines of ``text``, redacted and cut to a bounded length."""
    raw = text.splitlines()
    if byte_limit_hit and raw and not text.endswith("\n"):
        raw = raw[:-1]  # the byte limit cut the last line mid-way
    kept = raw[-max_lines:]
    lines = []
    for line in kept:
        shown = redact(line)
        if len(shown) > MAX_LINE_CHARS:
            shown = shown[:MAX_LINE_CHARS] + " [...cut]"
        lines.append(shown)
    return LogExcerpt(lines, byte_limit_hit or len(raw) > len(kept), len(text.encode()))


async def read_log(client: KubernetesClient, p: PodLogsParams) -> LogExcerpt:
    text = await client.pod_log(
        p.namespace,
        p.pod,
        container=p.container,
        tail_lines=p.tail_lines,
        since_seconds=int(p.since) if p.since is not None else None,
        limit_bytes=p.max_bytes,
    )
    return excerpt(text, max_lines=p.max_lines, byte_limit_hit=len(text.encode()) >= p.max_bytes)


@action("kubernetes.pod_logs", read_only=True, idempotent=True, permissions=("get pods/log",))
async def pod_logs(ctx: ActionContext, p: PodLogsParams) -> Output:
    """A container's recent log lines (tail, since), bounded in bytes and lines, secrets redacted."""
    client: KubernetesClient = ctx.need("kubernetes")
    log = await read_log(client, p)
    which = f"{p.namespace}/{p.pod}" + (f" container {p.container}" if p.container else "")
    window = f" in the last {format_duration(p.since)}" if p.since is not None else ""
    return {
        "ok": True,
        "namespace": p.namespace,
        "pod": p.pod,
        "container": p.container,
        "lines": log.lines,
        "count": len(log.lines),
        "truncated": log.truncated,
        "bytes_read": log.bytes_read,
        "message": f"{len(log.lines)} log line(s) of {which}{window}"
        + (" (truncated to the last ones)" if log.truncated else ""),
    }


ACTIONS = [pod_logs]
