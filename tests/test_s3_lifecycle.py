"""s3.lifecycle_audit and s3.remove_lifecycle_rules against moto's S3 server (a real S3 HTTP endpoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from support.s3 import MotoS3Server
from support.s3_lifecycle import Buckets, abort_multipart, expire
from support.thanos_blocks import action_ctx, s3_client

from daemon.actions.s3_lifecycle import AuditParams, RemoveParams, lifecycle_audit, remove_lifecycle_rules


@pytest_asyncio.fixture
async def client(moto_s3: MotoS3Server) -> AsyncIterator[Any]:
    c = s3_client(moto_s3.endpoint_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def buckets(moto_s3: MotoS3Server) -> Buckets:
    return Buckets(moto_s3)


async def test_an_expiration_on_longhorn_backups_is_flagged(buckets: Buckets, client: Any) -> None:
    buckets.put_rules("longhorn-backups", [expire("expire-old-backups", 30), abort_multipart()])
    buckets.put_rules("opensearch-logs", [expire("logs-180d", 180, prefix="snapshots/")])
    out = await lifecycle_audit.run(action_ctx(client), AuditParams())
    assert out["ok"] is True
    assert [(f["bucket"], f["id"]) for f in out["findings"]] == [
        ("opensearch-logs", "logs-180d"),
        ("longhorn-backups", "expire-old-backups"),
    ]
    longhorn = next(f for f in out["findings"] if f["bucket"] == "longhorn-backups")
    assert "Expiration after 30 day(s) on the longhorn store" in longhorn["reason"]
    assert "Longhorn's docs forbid any retention rule" in longhorn["reason"]
    rules = {r["id"]: r for b in out["buckets"] for r in b["rules"]}
    assert rules["abort-multipart"]["dangerous"] is False  # harmless, and never required on MinIO
    assert out["by_bucket"] == {"opensearch-logs": ["logs-180d"], "longhorn-backups": ["expire-old-backups"]}


async def test_no_rules_and_no_abort_rule_are_not_findings(buckets: Buckets, client: Any) -> None:
    out = await lifecycle_audit.run(action_ctx(client), AuditParams(others=["missing-bucket"]))
    assert out["findings"] == []
    assert [b["exists"] for b in out["buckets"]] == [True, True, True, False]
    assert out["message"] == "4 bucket(s), 0 lifecycle rule(s), 0 dangerous"


async def test_a_disabled_expiration_or_another_bucket_is_not_dangerous(
    buckets: Buckets, client: Any
) -> None:
    buckets.s3.create_bucket(Bucket="scratch")
    buckets.put_rules("scratch", [expire("tmp", 1)])
    buckets.put_rules("thanos", [{**expire("off", 10), "Status": "Disabled"}])
    out = await lifecycle_audit.run(action_ctx(client), AuditParams(others=["scratch"]))
    assert out["findings"] == []


async def test_remove_keeps_every_rule_it_was_not_told_to_remove(buckets: Buckets, client: Any) -> None:
    keep = [
        abort_multipart(),
        {
            "ID": "tiering",
            "Filter": {"Prefix": "cold/"},
            "Status": "Enabled",
            "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}],
        },
        expire("someone-elses-expiry", 400, prefix="other/"),
    ]
    buckets.put_rules("longhorn-backups", [expire("expire-a", 30), *keep, expire("expire-b", 60)])
    before = {r["ID"]: r for r in buckets.rules("longhorn-backups") or []}
    out = await remove_lifecycle_rules.run(
        action_ctx(client), RemoveParams(bucket="longhorn-backups", rule_ids=["expire-a", "expire-b"])
    )
    assert out["ok"] is True and out["removed"] == ["expire-a", "expire-b"]
    after = {r["ID"]: r for r in buckets.rules("longhorn-backups") or []}
    assert after == {k: before[k] for k in ("abort-multipart", "tiering", "someone-elses-expiry")}


async def test_removing_the_last_rule_deletes_the_configuration(buckets: Buckets, client: Any) -> None:
    buckets.put_rules("opensearch-logs", [expire("logs-180d")])
    out = await remove_lifecycle_rules.run(
        action_ctx(client), RemoveParams(bucket="opensearch-logs", rule_ids=["logs-180d"])
    )
    assert out["configuration_deleted"] is True
    assert buckets.rules("opensearch-logs") is None


async def test_a_rule_changed_since_the_plan_is_kept(buckets: Buckets, client: Any) -> None:
    buckets.put_rules("thanos", [abort_multipart("was-expiry"), expire("x", 9)])
    out = await remove_lifecycle_rules.run(
        action_ctx(client), RemoveParams(bucket="thanos", rule_ids=["was-expiry", "gone"])
    )
    assert out["ok"] is False and out["removed"] == [] and out["already_gone"] == ["gone"]
    assert [r["ID"] for r in buckets.rules("thanos") or []] == ["was-expiry", "x"]


async def test_remove_in_dry_run_changes_nothing(buckets: Buckets, client: Any) -> None:
    buckets.put_rules("thanos", [expire("a"), abort_multipart()])
    out = await remove_lifecycle_rules.run(
        action_ctx(client, dry_run=True), RemoveParams(bucket="thanos", rule_ids=["a"])
    )
    (req,) = out["requests"]
    assert req["operation"] == "PutBucketLifecycleConfiguration" and [r["ID"] for r in req["rules"]] == [
        "abort-multipart"
    ]
    assert len(buckets.rules("thanos") or []) == 2
