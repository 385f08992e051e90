"""Retention planning over a big Thanos bucket vs a bare paginated listing of the same bucket (design.md §9:
planning at least 0.8x the listing rate).

A moto S3 server runs in a child process (this script with --serve-moto). It creates BLOCKS Thanos blocks
in its backend before it starts serving (chunks/000001, index and meta.json each, with real meta.json
shapes; 1% already carry a deletion-mark.json, 0.1% are partial uploads): writing them over HTTP would
take minutes. Everything afterwards goes over HTTP on 127.0.0.1, path-style, signed, as against MinIO.

Measured, in this order, with runbookd's S3 client (aiobotocore, 1,000 keys a page):
- the bare listing: every page of ListObjectsV2 over the whole bucket, keys counted, nothing else;
- thanos.plan_retention, cold: a fresh client, so every block's meta.json is read (s3.max_concurrency
  at a time, overlapped with the listing); this is the first plan after runbookd starts;
- thanos.plan_retention, warm: the same client again; meta.json files are cached (blocks are
  immutable), so the plan lists the bucket and reads only blocks it has not seen.
Rates are blocks per second (BLOCKS / seconds); the bare listing and the warm plan are run REPEAT times,
alternating, and the best of each is compared.

    .venv/bin/python bench/retention.py [--blocks 20000] [--repeat 3] [--concurrency 32] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import common
from common import Check
from support.ports import free_port
from support.procs import base_env

from daemon.actions.thanos import retention
from daemon.clients.s3 import S3Client
from daemon.config import S3Config

HOUR_MS = 3_600_000
KEY = "bench"
RETENTION = {"retention_raw": "30d", "retention_5m": "180d", "retention_1h": "0d"}


# ---------------------------------------------------------------------------------------------- the bucket


def ulid(ms: int, rnd: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = (ms << 80) | rnd.getrandbits(80)
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def bucket_objects(blocks: int, now_ms: int, seed: int = 7) -> Any:
    """(key, body) of every object: 20 streams (10 clusters x 2 replicas) of 2h raw blocks going back in
    time, every 12th block of a stream a 5m one and every 48th a 1h one, as a compactor leaves them."""
    rnd = random.Random(seed)
    streams = [
        {"cluster": f"c{c:02d}", "prometheus": "monitoring/k8s", "replica": r}
        for c in range(10)
        for r in "AB"
    ]
    pending: dict[tuple[int, int], list[str]] = {}
    """(stream, resolution) -> sources of that stream's blocks of that resolution not downsampled yet."""
    for i in range(blocks):
        stream = i % len(streams)
        labels = streams[stream]
        max_time = now_ms - (i // len(streams)) * 2 * HOUR_MS - 30 * 60_000
        resolution = 3_600_000 if i % 48 == 47 else 300_000 if i % 12 == 11 else 0
        block_id = ulid(max_time + 60_000, rnd)
        # A downsampled block holds the sources of the finer blocks of its stream before it (Thanos keeps
        # compaction.sources through downsampling), so the plan's coverage rule has real work to do.
        finer = {300_000: 0, 3_600_000: 300_000}.get(resolution)
        sources = pending.pop((stream, finer), None) if finer is not None else None
        sources = sources or [block_id]
        pending.setdefault((stream, resolution), []).extend(sources)
        meta = {
            "ulid": block_id,
            "minTime": max_time - 2 * HOUR_MS,
            "maxTime": max_time,
            "stats": {"numSamples": 1_000_000, "numSeries": 5_000, "numChunks": 9_000},
            "compaction": {"level": 1, "sources": sources},
            "version": 1,
            "thanos": {
                "labels": labels,
                "downsample": {"resolution": resolution},
                "source": "sidecar" if resolution == 0 else "compactor",
                "segment_files": ["000001"],
                "files": [
                    {"rel_path": "chunks/000001", "size_bytes": 16},
                    {"rel_path": "index", "size_bytes": 8},
                ],
            },
        }
        yield f"{block_id}/chunks/000001", b"c" * 16
        yield f"{block_id}/index", b"i" * 8
        if i % 1000 != 999:  # 0.1% partial uploads: no meta.json
            yield f"{block_id}/meta.json", json.dumps(meta).encode()
        if i % 100 == 50:  # 1% already marked
            mark = {"id": block_id, "version": 1, "details": "bench", "deletion_time": max_time // 1000}
            yield f"{block_id}/deletion-mark.json", json.dumps(mark).encode()


def serve_moto(port: int, blocks: int, now_ms: int) -> None:
    """Child process: fill moto's S3 backend, then serve it on 127.0.0.1:port until killed. Request logging
    is off (moto_server logs every request, which costs it CPU the listing then waits for)."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket("thanos", "us-east-1")
    t0 = time.perf_counter()
    n = 0
    for key, body in bucket_objects(blocks, now_ms):
        backend.put_object("thanos", key, body)
        n += 1
    server = ThreadedMotoServer(ip_address=common.LOOPBACK, port=port, verbose=False)
    server.start()
    print(f"ready {n} {time.perf_counter() - t0:.1f}", flush=True)
    while True:
        time.sleep(3600)


# ---------------------------------------------------------------------------------------------- measuring


def client(endpoint: str, concurrency: int) -> S3Client:
    from pydantic import SecretStr

    cfg = S3Config(endpoint_url=endpoint, retries=0, timeout=120.0, max_concurrency=concurrency)
    return S3Client(cfg, access_key=SecretStr(KEY), secret_key=SecretStr(KEY))


async def bare_listing(c: S3Client) -> tuple[float, int, int]:
    """(seconds, objects, pages) of one paginated listing of the whole bucket."""
    t0 = time.perf_counter()
    objects = pages = 0
    async for page in c.iter_pages("thanos"):
        objects += len(page)
        pages += 1
    return time.perf_counter() - t0, objects, pages


async def plan(c: S3Client, now: float) -> tuple[float, dict[str, Any]]:
    from support.action_memory import DictActionMemory

    from daemon.actions.base import ActionContext, Clients
    from daemon.kits.clock import FrozenClock

    ctx = ActionContext(
        run_id="bench",
        step_id="plan",
        runbook="thanos-retention",
        dry_run=True,
        clients=Clients(s3=c),
        memory=DictActionMemory(),
        clock=FrozenClock(now),
    )
    # No Prometheus here: the compactor health check (three instant queries, independent of the bucket's
    # size) is left out; the coverage rule (5m/1h blocks of the same stream) is measured.
    params = retention.PlanParams.model_validate(
        {"bucket": "thanos", "max_blocks": 10_000, "compactor_check": False, **RETENTION}
    )
    t0 = time.perf_counter()
    out = await retention.plan_retention.run(ctx, params)
    return time.perf_counter() - t0, out


@dataclass
class Results:
    listings: list[tuple[float, int, int]]
    cold: tuple[float, dict[str, Any]]
    warm: list[tuple[float, dict[str, Any]]]
    rss_before_kb: int
    rss_after_kb: int
    cache_entries: int


async def measure(endpoint: str, args: argparse.Namespace, now: float) -> Results:
    listings: list[tuple[float, int, int]] = []
    warm: list[tuple[float, dict[str, Any]]] = []
    lister = client(endpoint, args.concurrency)
    c = client(endpoint, args.concurrency)
    try:
        await lister.head_bucket("thanos")  # create the aiobotocore client outside the timings
        await c.head_bucket("thanos")
        listings.append(await bare_listing(lister))
        print(f"  bare listing: {listings[-1][0]:.1f} s", flush=True)
        rss_before = common.proc_status(os.getpid(), children=False)["VmRSS"]
        cold = await plan(c, now)
        print(f"  plan, cold:   {cold[0]:.1f} s ({cold[1]['scan']['meta_reads']} meta.json read)", flush=True)
        rss_after = common.proc_status(os.getpid(), children=False)["VmRSS"]
        for _ in range(args.repeat):
            warm.append(await plan(c, now))
            print(f"  plan, warm:   {warm[-1][0]:.1f} s", flush=True)
            listings.append(await bare_listing(lister))
            print(f"  bare listing: {listings[-1][0]:.1f} s", flush=True)
        return Results(listings, cold, warm, rss_before, rss_after, len(c.memo))
    finally:
        await lister.close()
        await c.close()


def report(args: argparse.Namespace, r: Results, fill: str) -> bool:
    n = args.blocks
    best_list = min(s for s, _, _ in r.listings)
    best_warm = min(s for s, _ in r.warm)
    cold_s, cold_out = r.cold
    list_rate, warm_rate, cold_rate = n / best_list, n / best_warm, n / cold_s
    _, objects, pages = r.listings[0]
    out = r.warm[0][1]
    consistent = all(
        w[1]["count"] == cold_out["count"] and w[1]["ulids"] == cold_out["ulids"] for w in r.warm
    )
    checks = [
        Check("bucket", f"{n:,} blocks, {objects:,} objects, {pages} pages (moto fill: {fill})", "", None),
        Check(
            f"bare paginated listing, best of {len(r.listings)}",
            f"{best_list:.2f} s = {list_rate:,.0f} blocks/s ({objects / best_list:,.0f} keys/s)",
            "baseline",
            None,
        ),
        Check(
            f"plan_retention, warm cache, best of {len(r.warm)}",
            f"{best_warm:.2f} s = {warm_rate:,.0f} blocks/s ({warm_rate / list_rate:.2f}x listing)",
            ">= 0.8x listing",
            warm_rate >= 0.8 * list_rate,
        ),
        Check(
            "plan_retention, cold (first scan after start)",
            f"{cold_s:.2f} s = {cold_rate:,.0f} blocks/s ({cold_rate / list_rate:.2f}x listing); "
            f"{cold_out['scan']['meta_reads']:,} GETs at {args.concurrency} in flight",
            ">= 0.8x listing",
            cold_rate >= 0.8 * list_rate,
        ),
        Check(
            "plan result",
            f"{out['count']:,} planned, {out['protected_count']} protected (newest of stream), "
            f"skipped {out['skipped']}",
            "same every run",
            consistent,
        ),
        Check(
            "meta.json cache after the cold plan",
            f"{r.cache_entries:,} entries; bench RSS +{(r.rss_after_kb - r.rss_before_kb) / 1024:.0f} MB",
            "",
            None,
        ),
    ]
    return common.print_table("bench/retention.py: retention planning vs bare listing", checks)


def start_moto(blocks: int, now_ms: int) -> tuple[subprocess.Popen[str], str, str]:
    port = free_port()
    env = base_env(
        {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve-moto",
            str(port),
            "--blocks",
            str(blocks),
            "--now-ms",
            str(now_ms),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.kill()
        raise RuntimeError(f"moto did not start: {line}")
    return proc, f"http://{common.LOOPBACK}:{port}", f"{int(line[1]):,} objects in {line[2]} s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=20_000, help="Thanos blocks in the bucket (default 20,000)")
    p.add_argument(
        "--repeat", type=int, default=3, help="warm plans / listings to take the best of (default 3)"
    )
    p.add_argument("--concurrency", type=int, default=32, help="s3.max_concurrency (default 32)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--serve-moto", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--now-ms", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_moto:
        serve_moto(args.serve_moto, args.blocks, args.now_ms)
        return 0

    now = time.time()
    print(f"filling moto with {args.blocks:,} blocks ...", flush=True)
    proc, endpoint, fill = start_moto(args.blocks, int(now * 1000))
    try:
        results = asyncio.run(measure(endpoint, args, now))
    finally:
        proc.terminate()
        proc.wait(10)
    return common.finish(report(args, results, fill), args.strict)


if __name__ == "__main__":
    sys.exit(main())
