"""What starts runs: the Alertmanager webhook payload (Alertmanager's webhook_config contract), validated strictly."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_LABELS = 128
"""Most labels (or annotations) an alert may carry."""
MAX_NAME = 256
"""Longest label (or annotation) name."""
MAX_VALUE = 4096
"""Longest label (or annotation) value."""
MAX_FINGERPRINT = 128
"""Longest alert fingerprint (Alertmanager's are 16 hex digits)."""
MAX_ALERTS = 10_000
"""Most alerts in one notification."""


class _In(BaseModel):
    # Alertmanager may add fields in new versions: accept and ignore unknown keys, validate known ones.
    # cache_strings="keys": label names repeat from alert to alert, values (instances, fingerprints) mostly
    # do not, and looking each one up in pydantic's string cache cost ~5 us a webhook (10 alerts).
    model_config = ConfigDict(extra="ignore", frozen=True, cache_strings="keys")


# Bounds checked by pydantic's core (no Python call per alert): the webhook is a hot path.
Labels = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=MAX_NAME)],
        Annotated[str, StringConstraints(max_length=MAX_VALUE)],
    ],
    Field(max_length=MAX_LABELS),
]


def labels_key(labels: dict[str, str]) -> str:
    """An alert's identity when Alertmanager sent no fingerprint: a hash of its labels."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


class Alert(_In):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    # Field names are Alertmanager's own (camelCase), so payloads validate as they are sent.
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = Field("", max_length=MAX_FINGERPRINT)

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    def key(self) -> str:
        """The alert's identity: Alertmanager's fingerprint, or a hash of its labels when absent."""
        return self.fingerprint or labels_key(self.labels)

    def as_context(self) -> dict[str, object]:
        return alert_context(self)


class AlertFields(Protocol):
    """What routing reads of an alert: ``Alert``'s fields, or the quick parse's ``QuickAlert``'s."""

    @property
    def status(self) -> str: ...
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def annotations(self) -> dict[str, str]: ...
    @property
    def startsAt(self) -> str: ...
    @property
    def endsAt(self) -> str: ...
    @property
    def generatorURL(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...


def alert_context(alert: AlertFields) -> dict[str, object]:
    """What a template sees of an alert as ``alert`` (``Alert.as_context``, ``QuickAlert.as_context``)."""
    return {
        "status": alert.status,
        "name": alert.labels["alertname"],
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": alert.startsAt,
        "endsAt": alert.endsAt,
        "generatorURL": alert.generatorURL,
        "fingerprint": alert.fingerprint or labels_key(alert.labels),
    }


class WebhookPayload(_In):
    version: str = "4"
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(max_length=MAX_ALERTS)

    def holds_nul(self) -> bool:
        """Whether a string runbookd keeps (a label or annotation, a field of an alert or of the group)
        holds a NUL character, which PostgreSQL cannot store in text."""
        texts: list[str] = [self.version, self.groupKey, self.receiver, self.externalURL]
        for mapping in (self.groupLabels, self.commonLabels, self.commonAnnotations):
            texts += [*mapping, *mapping.values()]
        for alert in self.alerts:
            texts += [alert.startsAt, alert.endsAt, alert.generatorURL, alert.fingerprint]
            for mapping in (alert.labels, alert.annotations):
                texts += [*mapping, *mapping.values()]
        return any("\x00" in text for text in texts)

    @model_validator(mode="after")
    def _alerts_have_names(self) -> WebhookPayload:
        # One Python call per payload, not one per alert (a field validator on Alert.labels): hot path.
        for i, alert in enumerate(self.alerts):
            if not alert.labels.get("alertname"):
                raise ValidationError.from_exception_data(
                    "WebhookPayload",
                    [
                        InitErrorDetails(
                            type=PydanticCustomError("value_error", "an alert needs an alertname label"),
                            loc=("alerts", i, "labels"),
                            input=alert.labels,
                        )
                    ],
                )
        return self
