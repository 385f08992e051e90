"""The webhook's quick parse: notifications validated without pydantic.

Most notifications Alertmanager sends match no runbook; intake stores them already routed (``Router``'s
settled notifications) and never reads them again. Validating such a body with pydantic cost ~35 us of
the event loop for 10 alerts, a seventh of a request; msgspec decodes the same body into typed structs in
~15 us and refuses NaN/Infinity itself (no second scan). bench/README.md has the figures. A notification
left to routing (a resolved or matched alert) is routed from the same structs (``AnyPayload``): pydantic
validating it again was a tenth of the webhook's process time when every notification matched.

The quick parse only ever *takes* a body the full validation (``events.WebhookPayload``, then the
NaN/Infinity and NUL checks of ``server.intake``) would accept with the same values; anything else
(invalid, lax, a field Alertmanager's webhook does not send, a NUL, an alert without a name) returns None
and goes the full way, which also writes the 400's message. ``tests/test_quickparse.py`` holds the two to
that, and ``QuickAlert`` to what routing reads of an ``Alert`` (its name, key and template context).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec

from daemon.engine.events import (
    MAX_ALERTS,
    MAX_FINGERPRINT,
    MAX_LABELS,
    MAX_NAME,
    MAX_VALUE,
    Alert,
    WebhookPayload,
    alert_context,
    labels_key,
)

_Labels = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=MAX_NAME)],
        Annotated[str, msgspec.Meta(max_length=MAX_VALUE)],
    ],
    msgspec.Meta(max_length=MAX_LABELS),
]


class QuickAlert(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """``events.Alert``'s fields and bounds, as msgspec checks them."""

    status: Literal["firing", "resolved"]
    labels: _Labels
    annotations: _Labels = {}
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: Annotated[str, msgspec.Meta(max_length=MAX_FINGERPRINT)] = ""

    @property
    def name(self) -> str:
        """``events.Alert.name``."""
        return self.labels["alertname"]

    def key(self) -> str:
        """``events.Alert.key``."""
        return self.fingerprint or labels_key(self.labels)

    def as_context(self) -> dict[str, object]:
        """``events.Alert.as_context``."""
        return alert_context(self)


class QuickPayload(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """``events.WebhookPayload``'s fields and bounds, as msgspec checks them. No other field: a body with
    one (a newer Alertmanager's) goes the full way, which ignores it. So nothing here nests deeper than
    four levels (pydantic refuses more than 200; msgspec alone would allow ~1,000 in a field it skips)."""

    status: Literal["firing", "resolved"]
    alerts: Annotated[list[QuickAlert], msgspec.Meta(max_length=MAX_ALERTS)]
    version: str = "4"
    groupKey: str = ""
    truncatedAlerts: Annotated[int, msgspec.Meta(ge=0)] = 0
    receiver: str = ""
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""


AnyAlert: TypeAlias = Alert | QuickAlert
"""An alert as routing reads it: validated by pydantic (read back from the store) or by the quick parse."""
AnyPayload: TypeAlias = WebhookPayload | QuickPayload
"""A notification as routing reads it (``AnyAlert``)."""

_DECODER = msgspec.json.Decoder(QuickPayload)


def parse(text: str) -> QuickPayload | None:
    """The payload, if the quick parse can take it (see the module's docstring); else None."""
    if "\\u0000" in text:  # a NUL can only arrive escaped (JSON refuses raw control characters)
        return None
    try:
        payload = _DECODER.decode(text)
    except (msgspec.DecodeError, RecursionError):  # (msgspec's ValidationError is a DecodeError)
        return None
    for alert in payload.alerts:
        if not alert.labels.get("alertname"):
            return None
    return payload
