"""Alertmanager webhook payloads (facts.md §1) for tests: one firing or resolved alert per notification."""

from __future__ import annotations

from typing import Any


def webhook_payload(
    labels: dict[str, str],
    *,
    status: str = "firing",
    fingerprint: str = "fp-1",
    annotations: dict[str, str] | None = None,
    starts_at: str = "2026-11-26T10:00:00Z",
    generator_url: str = "http://127.0.0.1:9090/graph",
) -> dict[str, Any]:
    """A notification as Alertmanager 0.25 sends it; ``labels`` must hold ``alertname``."""
    alertname = labels["alertname"]
    notes = annotations if annotations is not None else {"summary": "test"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "runbookd",
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": notes,
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": notes,
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-26T11:00:00Z",
                "generatorURL": generator_url,
                "fingerprint": fingerprint,
            }
        ],
    }
