"""thanos.bucket_status, thanos.plan_retention and thanos.mark_for_deletion against moto's S3 server, with
fake blocks shaped as the sidecar and the compactor write them (tests/support/thanos_blocks.py).

The retention rules under test: only complete blocks, never a block already marked, never the newest
block of a stream (external labels + resolution), age from meta.json re-read right before marking,
deletion-mark.json exactly as Thanos writes it, and nothing ever deleted or overwritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError
from support.s3 import MotoS3Server
from support.thanos_blocks import (
    DAY_MS,
    HOUR_MS,
    SIDECAR_A,
    SIDECAR_B,
    Block,
    FakeThanosBucket,
    action_ctx,
    meta_json,
    s3_client,
    ulid,
)

from daemon.actions.thanos import retention, status
from daemon.clients.s3 import S3Client

NOW = time.time()  # S3 stamps LastModified with the real clock, so the actions' clock starts there too
NOW_MS = int(NOW * 1000)
FIVE_M, ONE_H = 300_000, 3_600_000


@pytest.fixture
async def client(moto_s3: MotoS3Server) -> AsyncIterator[S3Client]:
    c = s3_client(moto_s3.endpoint_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def bucket(moto_s3: MotoS3Server) -> FakeThanosBucket:
    return FakeThanosBucket(moto_s3)


def days_ago(days: float) -> int:
    return NOW_MS - int(days * DAY_MS)


def daily(
    bucket: FakeThanosBucket,
    labels: dict[str, str],
    days: range,
    resolution: int = 0,
    *,
    covered: bool = True,
) -> list[Block]:
    """One block a day, ``days`` days ago each, oldest first; with ``covered``, raw and 5m blocks get
    their downsampled copy one resolution coarser (as a working compactor leaves them)."""
    blocks = [
        bucket.add(max_time=days_ago(d), labels=labels, resolution=resolution)
        for d in sorted(days, reverse=True)
    ]
    if covered and resolution in (0, FIVE_M):
        bucket.cover(blocks)
    return blocks


async def plan(client: S3Client, now: float = NOW, **params: Any) -> dict[str, Any]:
    p = retention.PlanParams.model_validate({"bucket": "thanos", "compactor_check": False, **params})
    return await retention.plan_retention.run(action_ctx(client, now=now), p)


async def mark(client: S3Client, ulids: list[str], *, dry_run: bool = False, **params: Any) -> dict[str, Any]:
    p = retention.MarkParams.model_validate(
        {"bucket": "thanos", "ulids": ulids, "compactor_check": False, **params}
    )
    return await retention.mark_for_deletion.run(action_ctx(client, dry_run=dry_run, step_id="mark"), p)


# -- bucket_status -----------------------------------------------------------------------------------------


async def test_status_counts_blocks_partial_uploads_and_marked_blocks(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    a = daily(bucket, SIDECAR_A, range(1, 4), covered=False)
    b = daily(bucket, SIDECAR_B, range(1, 3), covered=False)
    compacted = bucket.add(max_time=days_ago(10), labels=SIDECAR_A, hours=48, source="compactor", level=3)
    partial = bucket.add(max_time=days_ago(0.1), labels=SIDECAR_A, partial=True)
    marked = bucket.add(max_time=days_ago(20), labels=SIDECAR_B, marked=True)
    bucket.put("debug/metas/whatever.json", b"{}")  # not a block folder
    bad = ulid(days_ago(5))
    bucket.put(f"{bad}/index", b"i")
    bucket.put(f"{bad}/meta.json", b"{not json")

    out = await status.bucket_status.run(action_ctx(client), status.StatusParams(bucket="thanos"))
    assert out["ok"] is True
    assert out["blocks"] == len(a) + len(b) + 1
    live = {blk.ulid for blk in [*a, *b, compacted]}
    assert out["bytes"] == sum(size for key, (size, _) in bucket.objects().items() if key[:26] in live)
    assert out["marked"]["count"] == 1 and out["marked"]["bytes"] > 0
    assert out["partial"]["count"] == 1
    assert [p["ulid"] for p in out["partial"]["oldest"]] == [partial.ulid]
    assert out["partial"]["oldest"][0]["objects"] == 2 and "max_time" not in out["partial"]["oldest"][0]
    assert out["unreadable"] == {
        "count": 1,
        "items": [{"ulid": bad, "problem": "meta.json is not valid JSON"}],
    }
    assert out["streams_total"] == 2
    by_replica = {s["labels"]["replica"]: s for s in out["streams"]}
    assert by_replica["A"]["blocks"] == 4 and by_replica["B"]["blocks"] == 2
    assert by_replica["A"]["sources"] == {"sidecar": 3, "compactor": 1}
    assert by_replica["A"]["newest_ulid"] == a[-1].ulid  # the latest maxTime, not the compacted block
    assert by_replica["B"]["newest_ulid"] == b[-1].ulid
    assert by_replica["A"]["stale"] is None  # no max_age asked
    assert marked.ulid not in json.dumps(out["streams"]) and compacted.ulid not in json.dumps(by_replica["B"])
    assert out["scan"]["meta_reads"] == out["blocks"] + 1  # every complete unmarked block, the bad one too
    assert out["message"].endswith("1 partial, 1 marked for deletion; 2 stream(s)")


async def test_status_max_age_says_whether_new_blocks_arrive(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 3), covered=False)
    daily(bucket, SIDECAR_B, range(1, 3), covered=False)

    async def check(now: float, **params: Any) -> dict[str, Any]:
        p = status.StatusParams.model_validate({"bucket": "thanos", **params})
        return await status.bucket_status.run(action_ctx(client, now=now), p)

    fresh = await check(time.time(), max_age="1h")
    assert fresh["ok"] is True and fresh["stale_streams"] == []
    assert "every one of 2 stream(s) uploaded a block within 1h" in fresh["message"]
    assert all(s["stale"] is False and s["upload_age_seconds"] < 600 for s in fresh["streams"])

    later = await check(time.time() + 2 * 3600, max_age="1h")  # two hours without an upload
    assert later["ok"] is False and len(later["stale_streams"]) == 2
    assert "2 of 2 stream(s) uploaded nothing within 1h" in later["message"]

    only_b = await check(time.time(), max_age="1h", labels={"replica": "B"}, source="sidecar")
    assert only_b["ok"] is True and [s["labels"]["replica"] for s in only_b["streams"]] == ["B"]

    nothing = await check(time.time(), max_age="1h", labels={"replica": "C"})
    assert nothing["ok"] is False and nothing["streams"] == []
    assert 'no block matches {replica="C"}' in nothing["message"]

    compactor = await check(time.time(), max_age="1h", source="compactor")
    assert compactor["ok"] is False


async def test_status_reads_each_meta_json_once_then_only_lists(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    blocks = daily(bucket, SIDECAR_A, range(1, 6), covered=False)
    params = status.StatusParams(bucket="thanos")
    first = await status.bucket_status.run(action_ctx(client), params)
    second = await status.bucket_status.run(action_ctx(client), params)
    assert (first["scan"]["meta_reads"], first["scan"]["meta_cached"]) == (5, 0)
    assert (second["scan"]["meta_reads"], second["scan"]["meta_cached"]) == (0, 5)

    def without_age(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:  # age follows the wall clock
        return [{k: v for k, v in s.items() if k != "upload_age_seconds"} for s in streams]

    assert without_age(second["streams"]) == without_age(first["streams"])

    # The compactor deletes a block: the next scan no longer sees it, and the cache forgets it.
    for key in [k for k in bucket.objects() if k.startswith(blocks[0].ulid)]:
        bucket.s3.delete_object(Bucket="thanos", Key=key)
    third = await status.bucket_status.run(action_ctx(client), params)
    assert third["blocks"] == 4 and len(client.memo) == 4


async def test_status_honours_the_objstore_prefix(client: S3Client, moto_s3: MotoS3Server) -> None:
    root = FakeThanosBucket(moto_s3)
    daily(root, SIDECAR_A, range(1, 3), covered=False)
    nested = FakeThanosBucket(moto_s3, prefix="cluster-196/", create=False)
    daily(nested, SIDECAR_B, range(1, 4), covered=False)
    out = await status.bucket_status.run(
        action_ctx(client), status.StatusParams(bucket="thanos", prefix="cluster-196")
    )
    assert out["prefix"] == "cluster-196/" and out["blocks"] == 3
    assert [s["labels"]["replica"] for s in out["streams"]] == ["B"]


# -- plan_retention ----------------------------------------------------------------------------------------


async def test_plan_never_plans_the_newest_block_of_a_stream(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    """A retired Prometheus (its stream stopped 60 days ago): every block is past retention, but the newest
    stays, so its last data is never retired. Live streams lose only their old blocks."""
    old_stream = daily(bucket, {"cluster": "retired", "replica": "A"}, range(60, 64))
    live = daily(bucket, SIDECAR_A, range(1, 40))
    out = await plan(client, retention_raw="30d")
    planned = set(out["ulids"])
    assert old_stream[-1].ulid not in planned
    assert {b.ulid for b in old_stream[:-1]} <= planned
    assert planned == {b.ulid for b in old_stream[:-1]} | {b.ulid for b in live if b.max_time < days_ago(30)}
    assert out["count"] == len(planned) == 3 + 9
    assert out["protected_count"] == 1 and out["protected"][0]["ulid"] == old_stream[-1].ulid
    assert out["protected"][0]["reason"] == "newest block of its stream"
    assert "kept 1 that are the newest of their stream" in out["message"]
    # Oldest first: the order a mark step takes them in.
    ages = {b.ulid: b.max_time for b in old_stream + live}
    assert out["ulids"] == sorted(out["ulids"], key=lambda u: (ages[u], u))


async def test_plan_skips_marked_and_partial_blocks(client: S3Client, bucket: FakeThanosBucket) -> None:
    kept = daily(bucket, SIDECAR_A, range(1, 3))
    marked = bucket.add(max_time=days_ago(50), labels=SIDECAR_A, marked=True)
    partial = bucket.add(max_time=days_ago(45), labels=SIDECAR_A, partial=True)
    old = bucket.add(max_time=days_ago(40), labels=SIDECAR_A)
    bucket.cover([old])
    out = await plan(client, retention_raw="30d")
    assert out["ulids"] == [old.ulid]
    assert out["skipped"] == {"marked": 1, "partial": 1, "unreadable": 0}
    assert marked.ulid not in json.dumps(out) and partial.ulid not in json.dumps(out)
    assert kept[-1].ulid not in out["ulids"]
    # 2 kept + their 2 copies, old + its copy: the marked and the partial block's meta.json are not read
    assert out["scan"]["meta_reads"] == 6


async def test_plan_applies_each_resolutions_retention_and_zero_keeps(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    raw = daily(bucket, SIDECAR_A, range(1, 50, 7))  # 1, 8, ..., 43 days
    five = daily(bucket, SIDECAR_A, range(10, 200, 30), resolution=FIVE_M)  # 10 ... 190 days
    hour = daily(bucket, SIDECAR_A, range(100, 900, 200), resolution=ONE_H)
    out = await plan(client, retention_raw="30d", retention_5m="180d", retention_1h="0d")
    assert out["retention"] == {"raw": "30d", "5m": "180d", "1h": "keep"}
    assert out["cutoffs"]["1h"] is None
    planned = set(out["ulids"])
    assert planned == {b.ulid for b in raw if b.max_time < days_ago(30)} | {
        b.ulid for b in five if b.max_time < days_ago(180)
    }
    assert not planned & {b.ulid for b in hour}
    assert out["by_resolution"] == {
        "raw": {"count": 2, "bytes": out["by_resolution"]["raw"]["bytes"]},
        "5m": {"count": 1, "bytes": out["by_resolution"]["5m"]["bytes"]},
    }
    assert out["bytes"] == sum(r["bytes"] for r in out["by_resolution"].values())


async def test_plan_lists_at_most_max_blocks_but_counts_all(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    blocks = daily(bucket, SIDECAR_A, range(1, 41))
    out = await plan(client, retention_raw="10d", max_blocks=5, max_listed=2)
    assert out["count"] == 30 and out["truncated"] is True
    assert out["ulids"] == [b.ulid for b in blocks[:5]]
    assert [b["ulid"] for b in out["blocks"]] == out["ulids"][:2]
    assert "the first 5 are listed" in out["message"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"retention_raw": 30}, "retention_raw: 30s is under 1d"),
        ({"retention_raw": "12h"}, "retention_raw: 12h is under 1d"),
        ({"retention_raw": "0d", "retention_5m": 0, "retention_1h": "0s"}, "every retention is 0"),
        ({}, "every retention is 0"),
        ({"retention_raw": "30d", "max_blocks": 10_001}, "less than or equal to 10000"),
        ({"retention_raw": "30d", "prefix": "../other"}, "not a valid key prefix"),
        ({"retention_raw": "30d", "prefix": "/abs"}, "not a valid key prefix"),
        ({"retention_raw": "30d", "prefix": "a//b"}, "not a valid key prefix"),
        ({"retention_raw": "30d", "bucket": "Thanos"}, "not a valid S3 bucket name"),
        ({"retention_raw": "soon"}, "invalid duration"),
    ],
)
def test_plan_params_are_validated(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        retention.PlanParams.model_validate({"bucket": "thanos", **params})
    assert message in str(err.value)


# -- mark_for_deletion -------------------------------------------------------------------------------------


async def test_mark_writes_exactly_the_thanos_deletion_mark_and_deletes_nothing(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 40))
    bucket.add(max_time=days_ago(3), labels=SIDECAR_A, partial=True)
    planned = (await plan(client, retention_raw="30d"))["ulids"]
    assert len(planned) == 9
    before = bucket.objects()

    started = time.time()
    out = await mark(client, planned, retention_raw="30d")
    assert out["ok"] is True and out["marked"] == 9 and out["refused"] == 0
    assert out["message"] == "9 block(s) marked, 0 already marked, 0 refused"
    assert out["details"] == "runbookd run run-1 step mark"

    after = bucket.objects()
    assert {k: v for k, v in after.items() if k in before} == before  # nothing removed or rewritten
    assert sorted(set(after) - set(before)) == sorted(f"{u}/deletion-mark.json" for u in planned)
    for u in planned:
        doc = bucket.read_json(f"{u}/deletion-mark.json")
        assert list(doc) == ["id", "version", "details", "deletion_time"]
        assert doc["id"] == u and doc["version"] == 1 and doc["details"] == "runbookd run run-1 step mark"
        assert (
            isinstance(doc["deletion_time"], int) and started - 5 <= doc["deletion_time"] <= time.time() + 1
        )


async def test_mark_is_idempotent(client: S3Client, bucket: FakeThanosBucket) -> None:
    daily(bucket, SIDECAR_A, range(1, 35))
    planned = (await plan(client, retention_raw="30d"))["ulids"]
    first = await mark(client, planned[:2], retention_raw="30d")
    assert first["marked"] == 2
    marks = bucket.objects()
    again = await mark(client, planned, retention_raw="30d")  # a re-run after a crash half-way
    assert again["ok"] is True
    assert (again["marked"], again["already_marked"]) == (len(planned) - 2, 2)
    after = bucket.objects()
    assert {k: after[k] for k in marks} == marks  # the first marks were not rewritten
    third = await mark(client, planned, retention_raw="30d")
    assert (third["marked"], third["already_marked"]) == (0, len(planned))
    assert bucket.objects() == after


async def test_mark_dry_run_records_the_put_requests_and_writes_nothing(
    client: S3Client, bucket: FakeThanosBucket, moto_s3: MotoS3Server
) -> None:
    daily(bucket, SIDECAR_A, range(1, 34))
    planned = (await plan(client, retention_raw="30d"))["ulids"]
    before = bucket.objects()
    out = await mark(client, planned, dry_run=True, retention_raw="30d")
    assert bucket.objects() == before
    assert out["dry_run"] is True and out["would_mark"] == len(planned) == 3
    assert [r["key"] for r in out["requests"]] == [f"{u}/deletion-mark.json" for u in planned]
    first = out["requests"][0]
    assert first == {
        "method": "PUT",
        "operation": "PutObject",
        "url": f"{moto_s3.endpoint_url}/thanos/{planned[0]}/deletion-mark.json",
        "bucket": "thanos",
        "key": f"{planned[0]}/deletion-mark.json",
        "content_type": "application/json",
        "body": {
            "id": planned[0],
            "version": 1,
            "details": "runbookd run run-1 step mark",
            "deletion_time": out["deletion_time"],
        },
    }


async def test_mark_rechecks_age_against_meta_json_and_refuses_young_blocks(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    blocks = daily(bucket, SIDECAR_A, range(1, 50))
    planned = (await plan(client, retention_raw="30d"))["ulids"]
    # The approver's list, checked against a longer retention: blocks 31-45 days old are now too young.
    out = await mark(client, planned, retention_raw="45d12h")
    assert out["ok"] is False
    young = {b.ulid for b in blocks if days_ago(45.5) < b.max_time < days_ago(30)}
    assert len(young) == 15
    assert {r["ulid"] for r in out["refusals"]} == young and out["refused"] == len(young)
    assert all("is not older than the retention cutoff" in r["reason"] for r in out["refusals"])
    assert out["marked"] == len(planned) - len(young)
    marks = {k.split("/")[0] for k in bucket.objects() if k.endswith("deletion-mark.json")}
    assert marks == set(planned) - young


async def test_mark_reads_meta_json_fresh_not_from_the_cache(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    """A meta.json that changed after the plan (cached by then) is judged by what it says now."""
    daily(bucket, SIDECAR_A, range(1, 3))
    old = bucket.add(max_time=days_ago(40), labels=SIDECAR_A)
    bucket.cover([old])
    assert (await plan(client, retention_raw="30d"))["ulids"] == [old.ulid]
    newer = meta_json(old.ulid, min_time=days_ago(2) - 2 * HOUR_MS, max_time=days_ago(2), labels=SIDECAR_A)
    bucket.put(f"{old.ulid}/meta.json", json.dumps(newer).encode())
    out = await mark(client, [old.ulid], retention_raw="30d")
    assert out["ok"] is False and out["marked"] == 0
    assert "is not older than the retention cutoff" in out["refusals"][0]["reason"]


async def test_mark_refuses_the_newest_block_of_a_stream_even_when_asked(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    retired = daily(bucket, {"cluster": "retired"}, range(60, 64))
    daily(bucket, SIDECAR_A, range(1, 3))
    out = await mark(client, [b.ulid for b in retired], retention_raw="30d")
    assert out["ok"] is False
    assert out["marked"] == 3
    assert out["refusals"] == [
        {
            "ulid": retired[-1].ulid,
            "reason": 'newest block of stream {cluster="retired"} at resolution raw: no newer block would '
            "remain (never the only copy)",
        }
    ]
    # With the three older ones marked, the newest is still refused on its own.
    again = await mark(client, [retired[-1].ulid], retention_raw="30d")
    assert again["marked"] == 0 and again["refused"] == 1


async def test_mark_refuses_missing_partial_and_unknown_blocks(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 3))
    partial = bucket.add(max_time=days_ago(40), labels=SIDECAR_A, partial=True)
    odd = bucket.add(max_time=days_ago(41), labels=SIDECAR_A, resolution=60_000)
    gone = ulid(days_ago(42))
    out = await mark(
        client, [partial.ulid, odd.ulid, gone], retention_raw="30d", retention_5m="30d", retention_1h="30d"
    )
    reasons = {r["ulid"]: r["reason"] for r in out["refusals"]}
    assert reasons == {
        partial.ulid: "no meta.json: a partial upload (the compactor cleans those up)",
        odd.ulid: "unknown resolution 60000 ms: not covered by any retention",
        gone: "no such block in the bucket",
    }
    assert not [k for k in bucket.objects() if k.endswith("deletion-mark.json")]


@pytest.mark.parametrize(
    ("ulids", "message"),
    [
        ([], "at least 1 item"),
        (["01h0000000000000000000000a"], "is not a ULID"),
        (["01H00000000000000000000000/../x"], "is not a ULID"),
        (["81H0000000000000000000000A"], "is not a ULID"),  # overflows 48 bits of time
        (["01H0000000000000000000000U"], "is not a ULID"),  # U is not Crockford base32
        (["01H0000000000000000000000A", "01H0000000000000000000000A"], "more than once"),
        (["01H0000000000000000000000A"] * 10_001, "at most 10000 items"),
    ],
)
def test_mark_params_are_validated(ulids: list[str], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        retention.MarkParams.model_validate({"bucket": "thanos", "ulids": ulids, "retention_raw": "30d"})
    assert message in str(err.value)


async def test_the_meta_cache_is_bounded(moto_s3: MotoS3Server, bucket: FakeThanosBucket) -> None:
    daily(bucket, SIDECAR_A, range(1, 6), covered=False)
    for entries, reads in ((2, 3), (0, 5)):
        c = s3_client(moto_s3.endpoint_url, meta_cache_entries=entries)
        try:
            params = status.StatusParams(bucket="thanos")
            await status.bucket_status.run(action_ctx(c), params)
            again = await status.bucket_status.run(action_ctx(c), params)
        finally:
            await c.close()
        assert len(c.memo) == entries
        assert (again["scan"]["meta_reads"], again["scan"]["meta_cached"]) == (reads, 5 - reads)
