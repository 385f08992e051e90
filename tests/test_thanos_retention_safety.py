"""Retention never destroys history: a block is retired only once downsampled (coarser blocks of the same
stream hold every one of its compaction.sources, as Thanos's cmd/thanos/downsample.go tells it), never
while the compactor is halted or idle, and never beyond the compactor's own retention flags.

Against moto's S3 server and, for the compactor's health, a real Prometheus scraping a test exporter that
plays the compactor's metrics (thanos_compact_halted, thanos_compact_iterations_total).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from pydantic import ValidationError
from support.prom import MetricsExporter, PrometheusServer, Scraped, scraped_exporter
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

from daemon.actions.thanos import retention
from daemon.clients.prometheus import PrometheusClient
from daemon.clients.s3 import S3Client
from daemon.clients.thanos import BlockFolder, parse_meta

NOW = time.time()
NOW_MS = int(NOW * 1000)
FIVE_M = 300_000
COMPACTOR = {"namespace": "monitoring", "pod": "thanos-compact-0"}


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


def daily(bucket: FakeThanosBucket, labels: dict[str, str], days: range, resolution: int = 0) -> list[Block]:
    return [
        bucket.add(max_time=NOW_MS - d * DAY_MS, labels=labels, resolution=resolution)
        for d in sorted(days, reverse=True)
    ]


def ctx(client: S3Client, prom: PrometheusClient | None = None) -> Any:
    c = action_ctx(client, now=NOW, step_id="mark")
    c.clients.prometheus = prom
    return c


async def plan(client: S3Client, prom: PrometheusClient | None = None, **params: Any) -> dict[str, Any]:
    p = retention.PlanParams.model_validate(
        {"bucket": "thanos", "retention_raw": "30d", "compactor_check": prom is not None, **params}
    )
    return await retention.plan_retention.run(ctx(client, prom), p)


async def mark(
    client: S3Client, ulids: list[str], prom: PrometheusClient | None = None, **params: Any
) -> dict[str, Any]:
    p = retention.MarkParams.model_validate(
        {
            "bucket": "thanos",
            "ulids": ulids,
            "retention_raw": "30d",
            "compactor_check": prom is not None,
            **params,
        }
    )
    return await retention.mark_for_deletion.run(ctx(client, prom), p)


def marks(bucket: FakeThanosBucket) -> set[str]:
    return {k.split("/")[0] for k in bucket.objects() if k.endswith("deletion-mark.json")}


# -- coverage ----------------------------------------------------------------------------------------------


async def test_a_raw_only_bucket_marks_nothing_and_lists_every_old_block_as_not_downsampled(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    """The seed keeps history through downsampling: raw blocks no 5m block covers are that history."""
    a = daily(bucket, SIDECAR_A, range(1, 41))
    b = daily(bucket, SIDECAR_B, range(1, 41))
    old = {x.ulid for x in a + b if x.max_time < NOW_MS - 30 * DAY_MS}
    out = await plan(client, max_listed=100)
    assert out["count"] == 0 and out["ulids"] == []
    assert out["not_downsampled_count"] == len(old) == 20
    assert {x["ulid"] for x in out["not_downsampled"]} == old
    assert all(
        x["reason"] == "kept: not downsampled yet (its source is in no 5m block of the same stream)"
        for x in out["not_downsampled"]
    )
    assert "kept 20 past retention that are not downsampled yet" in out["message"]
    # Asked directly (a hand-written list), the action refuses them too and writes nothing.
    result = await mark(client, sorted(old))
    assert result["marked"] == 0 and result["refused"] == len(old)
    assert all(r["reason"].startswith("kept: not downsampled yet") for r in result["refusals"])
    assert marks(bucket) == set()


async def test_coverage_by_another_stream_does_not_count(client: S3Client, bucket: FakeThanosBucket) -> None:
    """Replica B's 5m blocks cover the same hours, but not replica A's series: A's raw blocks stay."""
    a = daily(bucket, SIDECAR_A, range(31, 41))
    daily(bucket, SIDECAR_A, range(1, 3))
    b = daily(bucket, SIDECAR_B, range(31, 41))
    daily(bucket, SIDECAR_B, range(1, 3))
    bucket.cover(b)  # B's downsampled copies only
    out = await plan(client, max_listed=100)
    assert set(out["ulids"]) == {x.ulid for x in b}
    assert {x["ulid"] for x in out["not_downsampled"]} == {x.ulid for x in a}
    result = await mark(client, [x.ulid for x in a])
    assert result["marked"] == 0 and result["refused"] == len(a)
    assert marks(bucket) == set()


def late_reason(name: str, which: str = "its source is") -> str:
    return (
        f"kept: not downsampled: {name} blocks of the same stream span its time range, but {which} in no "
        f"{name} block (uploaded late or backfilled after those were built)"
    )


async def test_a_raw_block_is_covered_only_when_5m_blocks_hold_every_one_of_its_sources(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    """A compacted raw block holds the data of several uploads (its sources). 5m blocks that hold them
    between them cover it; a source held by no 5m block keeps it, whatever the time ranges say."""
    daily(bucket, SIDECAR_A, range(1, 3))
    src = [ulid(NOW_MS - 45 * DAY_MS + i * HOUR_MS, bucket.rnd) for i in range(4)]
    full = bucket.add(max_time=NOW_MS - 41 * DAY_MS, labels=SIDECAR_A, hours=4, level=2, sources=src[:2])
    half = bucket.add(max_time=NOW_MS - 40 * DAY_MS, labels=SIDECAR_A, hours=4, level=2, sources=src[2:])
    mid = full.min_time + 2 * HOUR_MS
    # `full`: two 5m blocks, one from each of its sources (downsampled before they were compacted).
    bucket.add(min_time=full.min_time, max_time=mid, labels=SIDECAR_A, resolution=FIVE_M, sources=src[:1])
    bucket.add(min_time=mid, max_time=full.max_time, labels=SIDECAR_A, resolution=FIVE_M, sources=src[1:2])
    # `half`: one 5m block over its whole range, but built from only one of its two sources.
    bucket.add(
        min_time=half.min_time, max_time=half.max_time, labels=SIDECAR_A, resolution=FIVE_M, sources=src[3:]
    )
    out = await plan(client)
    assert out["ulids"] == [full.ulid]
    reason = late_reason("5m", "1 of its 2 sources is")
    assert [(x["ulid"], x["reason"]) for x in out["not_downsampled"]] == [(half.ulid, reason)]
    result = await mark(client, [full.ulid, half.ulid])
    assert (result["marked"], result["refused"]) == (1, 1)
    assert result["refusals"] == [{"ulid": half.ulid, "reason": reason}]
    assert marks(bucket) == {full.ulid}


@pytest.mark.parametrize("resolution", [0, FIVE_M], ids=["raw-inside-5m", "5m-inside-1h"])
async def test_a_late_block_inside_a_downsampled_range_is_kept(
    client: S3Client, bucket: FakeThanosBucket, resolution: int
) -> None:
    """The review's case. The compactor downsampled `early` (its copy holds early's sources and spans its
    time range); then a block of the same stream was uploaded late, or backfilled, inside that range. Its
    data is in no coarser block: Thanos, which tells downsampled blocks by compaction.sources
    (cmd/thanos/downsample.go), would still downsample it. Retiring it by time range lost that data."""
    rets = {"retention_raw": "30d", "retention_5m": "180d"}
    age, name = (40, "5m") if resolution == 0 else (200, "1h")
    daily(bucket, SIDECAR_A, range(1, 3), resolution=resolution)  # the stream's newest: protected
    early = bucket.add(max_time=NOW_MS - age * DAY_MS, labels=SIDECAR_A, hours=48, resolution=resolution)
    bucket.cover([early])
    late = bucket.add(
        max_time=early.max_time - 12 * HOUR_MS,
        labels=SIDECAR_A,
        resolution=resolution,
        created=NOW_MS - DAY_MS,  # uploaded yesterday
    )
    out = await plan(client, max_listed=100, **rets)
    assert out["ulids"] == [early.ulid]
    assert [(x["ulid"], x["reason"]) for x in out["not_downsampled"]] == [(late.ulid, late_reason(name))]
    assert (
        "kept 1 past retention that are not downsampled yet (1 of them inside the time range of coarser "
        "blocks built from other sources: uploaded late or backfilled)"
    ) in out["message"]
    # Asked directly (a hand-written list), the mark step refuses it for the same reason.
    result = await mark(client, [early.ulid, late.ulid], **rets)
    assert (result["marked"], result["refused"]) == (1, 1)
    assert result["refusals"] == [{"ulid": late.ulid, "reason": late_reason(name)}]
    assert marks(bucket) == {early.ulid}


BROKEN_SOURCES: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing": lambda doc: doc["compaction"].pop("sources"),
    "no-compaction": lambda doc: doc.pop("compaction"),
    "empty": lambda doc: doc["compaction"].update(sources=[]),
    "not-a-list": lambda doc: doc["compaction"].update(sources=doc["ulid"]),
    "not-ulids": lambda doc: doc["compaction"].update(sources=["not-a-ulid"]),
    "lowercase": lambda doc: doc["compaction"].update(sources=[doc["ulid"].lower()]),
    "one-bad": lambda doc: doc["compaction"]["sources"].append(42),
}


@pytest.mark.parametrize("tweak", list(BROKEN_SOURCES.values()), ids=list(BROKEN_SOURCES))
async def test_a_block_with_missing_or_malformed_sources_is_kept(
    client: S3Client, bucket: FakeThanosBucket, tweak: Callable[[dict[str, Any]], None]
) -> None:
    """Nobody can tell whether its data was downsampled: kept, with the reason, and the plan goes on."""
    daily(bucket, SIDECAR_A, range(1, 3))
    good = bucket.add(max_time=NOW_MS - 41 * DAY_MS, labels=SIDECAR_A)
    bad = bucket.add(max_time=NOW_MS - 40 * DAY_MS, labels=SIDECAR_A, tweak=tweak)
    bucket.cover([good])
    bucket.add(  # a 5m block over `bad` that even lists its ULID
        min_time=bad.min_time, max_time=bad.max_time, labels=SIDECAR_A, resolution=FIVE_M, sources=[bad.ulid]
    )
    out = await plan(client)
    assert out["ulids"] == [good.ulid]
    reason = (
        "kept: not downsampled as far as can be told (its meta.json has no valid compaction.sources, so no "
        "5m block can be shown to hold its data)"
    )
    assert [(x["ulid"], x["reason"]) for x in out["not_downsampled"]] == [(bad.ulid, reason)]
    result = await mark(client, [bad.ulid])
    assert result["refusals"] == [{"ulid": bad.ulid, "reason": reason}]
    assert marks(bucket) == set()


async def test_a_5m_block_with_malformed_sources_covers_nothing(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 3))
    raw = bucket.add(max_time=NOW_MS - 40 * DAY_MS, labels=SIDECAR_A)
    bucket.add(
        min_time=raw.min_time,
        max_time=raw.max_time,
        labels=SIDECAR_A,
        resolution=FIVE_M,
        sources=[raw.ulid, "garbage"],
    )
    out = await plan(client)
    assert out["count"] == 0
    assert [(x["ulid"], x["reason"]) for x in out["not_downsampled"]] == [
        (raw.ulid, "kept: not downsampled yet (its source is in no 5m block of the same stream)")
    ]
    assert (await mark(client, [raw.ulid]))["marked"] == 0 and marks(bucket) == set()


def test_parse_meta_reads_compaction_sources_and_never_fails_on_them() -> None:
    own, other = ulid(NOW_MS), ulid(NOW_MS - DAY_MS)
    doc = meta_json(own, min_time=0, max_time=1, labels=SIDECAR_A, sources=[own, other, own])
    assert parse_meta(own, json.dumps(doc).encode()).sources == (own, other)
    for name, tweak in BROKEN_SOURCES.items():
        doc = meta_json(own, min_time=0, max_time=1, labels=SIDECAR_A)
        tweak(doc)
        meta = parse_meta(own, json.dumps(doc).encode())
        assert meta.sources is None, name
        assert (meta.min_time, meta.max_time, meta.labels) == (0, 1, tuple(sorted(SIDECAR_A.items())))


def test_parse_meta_turns_deep_nesting_into_a_value_error() -> None:
    """json.loads raises RecursionError, not ValueError, on a deeply nested document well under the size
    limit; it escaped the scan's readers and failed the whole plan."""
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_meta(ulid(NOW_MS), b"[" * 100_000)


async def test_one_deeply_nested_meta_json_does_not_fail_the_plan(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    bucket.add(max_time=NOW_MS - DAY_MS, labels=SIDECAR_A)
    bad = bucket.add(max_time=NOW_MS - 40 * DAY_MS, labels=SIDECAR_A)
    bucket.put(f"{bad.ulid}/meta.json", b"[" * 100_000)
    out = await plan(client)
    assert out["skipped"]["unreadable"] == 1


async def test_the_mark_step_does_not_compare_blocks_pairwise(
    client: S3Client, bucket: FakeThanosBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which candidates stay was ``f not in split.covered``: a list scan comparing whole BlockFolders, n²/2
    comparisons (~11 s of event loop for a 10,000-block step). Blocks are told apart by ULID."""
    old = daily(bucket, SIDECAR_A, range(31, 91))
    bucket.add(max_time=NOW_MS - DAY_MS, labels=SIDECAR_A)  # the newest of the stream
    bucket.cover(old)
    calls = 0
    original = BlockFolder.__eq__

    def counting(self: BlockFolder, other: object) -> bool:
        nonlocal calls
        calls += 1
        return original(self, other)

    monkeypatch.setattr(BlockFolder, "__eq__", counting)
    out = await mark(client, [b.ulid for b in old])
    assert out["marked"] == len(old)
    assert calls < len(old), calls  # pairwise: ~n²/2, 1,770 for these 60


async def test_5m_blocks_need_1h_blocks_and_a_marked_cover_does_not_count(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 3), resolution=FIVE_M)
    five = daily(bucket, SIDECAR_A, range(190, 200), resolution=FIVE_M)
    bucket.cover(five[:5])
    bucket.cover(five[5:], marked=True)  # being deleted by the compactor: no cover
    out = await plan(client, retention_raw="30d", retention_5m="180d", max_listed=100)
    assert set(out["ulids"]) == {x.ulid for x in five[:5]}
    assert {x["ulid"] for x in out["not_downsampled"]} == {x.ulid for x in five[5:]}
    assert out["not_downsampled"][0]["reason"] == (
        "kept: not downsampled yet (its source is in no 1h block of the same stream)"
    )


async def test_mark_rechecks_coverage_a_cover_marked_after_the_plan_refuses(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 3))
    old = daily(bucket, SIDECAR_A, range(35, 38))
    copies = bucket.cover(old)
    planned = (await plan(client))["ulids"]
    assert set(planned) == {x.ulid for x in old}
    # Between the approval and the mark, the compactor marks one 5m copy (e.g. its own retention).
    bucket.put(f"{copies[0].ulid}/deletion-mark.json", b'{"id": "x", "version": 1, "deletion_time": 1}')
    result = await mark(client, planned)
    assert result["marked"] == 2 and result["refused"] == 1
    assert result["refusals"][0]["ulid"] == old[0].ulid
    assert marks(bucket) == {old[1].ulid, old[2].ulid, copies[0].ulid}


async def test_mark_rechecks_the_sources_of_the_covers_read_anew(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    """Right before each mark the covering blocks' meta.json is read again, never from the cache, and
    their compaction.sources must still hold the block's: here one copy's meta.json changes after the
    plan (which cached it) and no longer lists its input."""
    daily(bucket, SIDECAR_A, range(1, 3))
    old = daily(bucket, SIDECAR_A, range(35, 37))
    copies = bucket.cover(old)
    planned = (await plan(client))["ulids"]
    assert set(planned) == {x.ulid for x in old}
    doc = {**copies[0].meta, "compaction": {"level": 1, "sources": [ulid(NOW_MS, bucket.rnd)]}}
    bucket.put(f"{copies[0].ulid}/meta.json", json.dumps(doc).encode())
    result = await mark(client, planned)
    assert (result["marked"], result["refused"]) == (1, 1)
    assert result["refusals"] == [
        {
            "ulid": old[0].ulid,
            "reason": "kept: not downsampled any more (its source is in no 5m block of its stream now)",
        }
    ]
    assert marks(bucket) == {old[1].ulid}


async def test_a_source_still_held_by_another_5m_block_is_enough(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    """The compactor compacts 5m blocks too: d0 and d1 became D (their sources together), and d0 is marked
    after the plan. D still holds old[0]'s source, so old[0] is downsampled and may go, as Thanos sees it."""
    daily(bucket, SIDECAR_A, range(1, 3))
    old = daily(bucket, SIDECAR_A, range(35, 37))
    d0, _ = bucket.cover(old)
    bucket.add(
        min_time=old[0].min_time,
        max_time=old[1].max_time,
        labels=SIDECAR_A,
        resolution=FIVE_M,
        level=2,
        sources=[old[0].ulid, old[1].ulid],
    )
    planned = (await plan(client))["ulids"]
    assert set(planned) == {x.ulid for x in old}
    bucket.put(f"{d0.ulid}/deletion-mark.json", b'{"id": "x", "version": 1, "deletion_time": 1}')
    result = await mark(client, planned)
    assert (result["marked"], result["refused"]) == (2, 0)
    assert marks(bucket) == {old[0].ulid, old[1].ulid, d0.ulid}


# -- the compactor's own retention flags -------------------------------------------------------------------


async def test_never_more_than_the_compactors_own_retention(
    client: S3Client, bucket: FakeThanosBucket
) -> None:
    daily(bucket, SIDECAR_A, range(1, 3))
    bucket.cover(old := daily(bucket, SIDECAR_A, range(31, 71, 5)))
    ages = {x.ulid: (NOW_MS - x.max_time) / DAY_MS for x in old}
    out = await plan(
        client, compactor_retention_raw="50d", compactor_retention_5m="", compactor_retention_1h=""
    )
    assert out["compactor_flags"] == {"--retention.resolution-raw": "50d"}
    assert out["retention"]["raw"] == "50d"
    assert "the compactor runs with --retention.resolution-raw=50d" in out["message"]
    assert {u for u in out["ulids"]} == {u for u, age in ages.items() if age > 50}
    # The compactor keeps raw for ever: nothing raw is marked, in the plan or in the action.
    keep = await plan(client, compactor_retention_raw="0d")
    assert keep["count"] == 0 and keep["retention"]["raw"] == "keep"
    refused = await mark(client, list(ages), compactor_retention_raw="0d")
    assert refused["marked"] == 0 and marks(bucket) == set()


def test_compactor_selector_is_matchers_only() -> None:
    with pytest.raises(ValidationError, match="compactor_selector must be PromQL label matchers"):
        retention.PlanParams.model_validate(
            {"bucket": "thanos", "retention_raw": "30d", "compactor_selector": 'job="x"} or vector(1'}
        )
    ok = retention.PlanParams.model_validate(
        {
            "bucket": "thanos",
            "retention_raw": "30d",
            "compactor_selector": 'job="thanos-compact", ns=~"mon.*"',
        }
    )
    assert ok.compactor_selector.startswith("job=")


# -- the compactor's health --------------------------------------------------------------------------------


@pytest.fixture
async def prom_client(
    exporter_factory: Callable[..., MetricsExporter], prometheus_factory: Callable[..., PrometheusServer]
) -> AsyncIterator[Scraped]:
    """The compactor's metrics (a test exporter), the Prometheus scraping them, and its client."""
    async with scraped_exporter(exporter_factory, prometheus_factory, "thanos-compact") as scraped:
        yield scraped


def compactor_metrics(
    exporter: MetricsExporter, *, halted: int, iterations: int, labels: Mapping[str, str] = COMPACTOR
) -> None:
    exporter.set("thanos_compact_halted", halted, labels)
    exporter.set("thanos_compact_iterations_total", iterations, labels, type="counter")


def covered_bucket(bucket: FakeThanosBucket) -> list[str]:
    daily(bucket, SIDECAR_A, range(1, 3))
    old = daily(bucket, SIDECAR_A, range(35, 38))
    bucket.cover(old)
    return [x.ulid for x in old]


async def test_a_halted_compactor_holds_everything_back(
    client: S3Client, bucket: FakeThanosBucket, prom_client: Scraped
) -> None:
    exporter, prom, pc = prom_client
    old = covered_bucket(bucket)
    compactor_metrics(exporter, halted=1, iterations=5)
    await prom.wait_for_async("thanos_compact_halted == 1")
    out = await plan(client, pc)
    assert out["count"] == 0 and out["held_by_compactor"] == 3
    assert out["compactor"]["healthy"] is False and out["compactor"]["halted"] is True
    assert "NOTHING planned" in out["message"] and "halted" in out["message"]
    result = await mark(client, old, pc)
    assert result["marked"] == 0 and result["refused"] == 3
    assert "the compactor is not working" in result["refusals"][0]["reason"]
    assert marks(bucket) == set()


async def test_no_compactor_series_holds_everything_back(
    client: S3Client, bucket: FakeThanosBucket, prom_client: Scraped
) -> None:
    exporter, prom, pc = prom_client
    old = covered_bucket(bucket)
    exporter.set("some_other_metric", 1)
    await prom.wait_for_async("some_other_metric")
    out = await plan(client, pc)
    assert out["count"] == 0 and out["compactor"]["healthy"] is False
    assert "no compactor series" in out["compactor"]["reason"]
    assert (await mark(client, old, pc))["marked"] == 0
    assert marks(bucket) == set()


async def test_an_idle_compactor_holds_back_and_a_working_one_lets_through(
    client: S3Client, bucket: FakeThanosBucket, prom_client: Scraped
) -> None:
    exporter, prom, pc = prom_client
    old = covered_bucket(bucket)
    compactor_metrics(exporter, halted=0, iterations=7)
    await prom.wait_for_async("count_over_time(thanos_compact_iterations_total[1m]) >= 2")
    idle = await plan(client, pc)
    assert idle["count"] == 0 and "completed no iteration" in idle["compactor"]["reason"]
    exporter.set("thanos_compact_iterations_total", 8, COMPACTOR, type="counter")
    await prom.wait_for_async("increase(thanos_compact_iterations_total[24h]) > 0")
    out = await plan(client, pc, compactor_selector='job="thanos-compact"')
    assert out["compactor"]["healthy"] is True and set(out["ulids"]) == set(old)
    result = await mark(client, out["ulids"], pc, compactor_selector='job="thanos-compact"')
    assert result["marked"] == 3 and marks(bucket) == set(old)


async def test_one_idle_compactor_is_not_hidden_by_a_working_one(
    client: S3Client, bucket: FakeThanosBucket, prom_client: Scraped
) -> None:
    """Two compactors behind the selector (shards, or another bucket's on a shared Thanos Query): one
    completes iterations, the other none in 24h. Downsampling may be behind: nothing is marked."""
    exporter, prom, pc = prom_client
    old = covered_bucket(bucket)
    idle = {**COMPACTOR, "pod": "thanos-compact-shard-1"}
    for labels in (COMPACTOR, idle):
        compactor_metrics(exporter, halted=0, iterations=7, labels=labels)
    await prom.wait_for_async("count_over_time(thanos_compact_iterations_total[1m]) >= 2")
    exporter.set("thanos_compact_iterations_total", 8, COMPACTOR, type="counter")
    await prom.wait_for_async(
        f'increase(thanos_compact_iterations_total{{pod="{COMPACTOR["pod"]}"}}[24h]) > 0'
    )
    out = await plan(client, pc)
    assert out["count"] == 0 and out["compactor"]["healthy"] is False
    assert "completed no iteration" in out["compactor"]["reason"]
    assert (await mark(client, old, pc))["marked"] == 0
    assert marks(bucket) == set()
