"""Validators of names and units that alert labels and params reach: a trailing newline is refused.

An adversarial review: ``re.match`` with ``$`` accepts a final ``\\n``. An alert with ``bucket="thanos\\n"``
was a run target other than ``thanos`` (one active run per target, cooldown and the daily limit
bypassed), and the bucket it named could never be read. Every such check uses ``fullmatch``."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from daemon.clients.thanos import is_ulid
from daemon.kits.names import DnsLabel, DnsSubdomain, LabelName, S3BucketName, S3Prefix, Ulid
from daemon.kits.promunits import parse_prom_duration, parse_prom_size
from daemon.notify.slack_messages import who
from daemon.runbooks.schema import Slug

VALID: list[tuple[Any, str]] = [
    (DnsLabel, "monitoring"),
    (DnsSubdomain, "node-196.example"),
    (LabelName, "job"),
    (S3BucketName, "thanos"),
    (S3Prefix, "thanos/blocks"),
    (Ulid, "01HX0000000000000000000000"),
    (Slug, "node-degradation"),  # runbook names and step ids
]


@pytest.mark.parametrize(("kind", "value"), VALID)
def test_a_valid_name_is_taken_and_the_same_with_a_trailing_newline_is_refused(kind: Any, value: str) -> None:
    TypeAdapter(kind).validate_python(value)
    for hostile in (value + "\n", value + "\r\n", "\n" + value):
        with pytest.raises(ValidationError):
            TypeAdapter(kind).validate_python(hostile)


@pytest.mark.parametrize(("parse", "value"), [(parse_prom_duration, "24h"), (parse_prom_size, "50GB")])
def test_prometheus_units_refuse_a_trailing_newline(parse: Any, value: str) -> None:
    assert parse(value) > 0
    with pytest.raises(ValueError):
        parse(value + "\n")


def test_a_slack_identity_with_a_trailing_newline_is_not_mentioned_as_a_slack_user() -> None:
    assert who("slack:U0123ABCD") == "<@U0123ABCD>"
    assert "<@" not in who("slack:U0123ABCD\n")


def test_a_block_name_with_a_trailing_newline_is_not_a_ulid() -> None:
    assert is_ulid("01HX0000000000000000000000") and not is_ulid("01HX0000000000000000000000\n")
