"""Schedules and scheduled checks at the edges of time and leadership: a schedule never fires a run twice,
never skips a slot, never loses its place (a daylight-saving night, a catch-up a moment before the next
slot, a clock corrected after a jump forward, a cron that never fires), and a check's result or gauge
never outlives the leadership it was made under. Found by an adversarial review; each test failed on the
code before."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.check_actions import Probe
from support.gates import wait_until
from support.inproc import Daemon, base_config, serve

from daemon.kits.clock import FrozenClock

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def scheduled(cron: str, name: str = "nightly") -> str:
    return f"""
name: {name}
triggers: [{{schedule: "{cron}"}}]
target: {name}
steps:
  - id: report
    action: notify.log
    with: {{message: "fired for {{{{ schedule.fire_time }}}}"}}
"""


async def fired(d: Daemon) -> list[str]:
    """The fire times of the runs the schedule started, oldest first."""
    listed = (await d.call("GET", "/api/v1/runs"))[1]["runs"]
    out = []
    for r in listed:
        full = (await d.call("GET", f"/api/v1/runs/{r['id']}"))[1]
        out.append(full["steps"][0]["plan"]["message"].removeprefix("fired for "))
    return sorted(out)


async def reject_all(d: Daemon) -> None:
    for r in (await d.call("GET", "/api/v1/runs"))[1]["runs"]:
        if r["state"] == "awaiting_approval":
            status, body = await d.call("POST", f"/api/v1/runs/{r['id']}/reject", json={"reason": "seen"})
            assert status == 200, body


async def test_a_daily_job_fires_once_on_the_night_clocks_fall_back(tmp_path: Path) -> None:
    """timezone: Europe/Berlin, "30 2 * * *": on 2026-10-25 02:30 local happens twice (CEST, then CET).
    cron runs a fixed-time job once on that night; runbookd starts two runs an hour apart."""
    clock = FrozenClock(ts("2026-10-24T22:00:00"))  # 00:00 CEST on the night of the change
    config = base_config(tmp_path, timezone="Europe/Berlin")
    async with serve(tmp_path, {"nightly": scheduled("30 2 * * *")}, config=config, clock=clock) as d:
        await d.engine.tick()
        clock.advance(2.5 * 3600 + 60)  # 00:31Z = 02:31 CEST
        await d.engine.tick()
        assert await fired(d) == ["2026-10-25T00:30:00Z"]
        await reject_all(d)  # the night's job was handled
        clock.advance(3600)  # 01:31Z = 02:31 CET, the same local time again
        await d.engine.tick()
        assert await fired(d) == ["2026-10-25T00:30:00Z"], "the nightly job fired twice in one night"
        clock.advance(86400)  # the next night, 02:30 CET = 01:30Z: it fires again
        await d.engine.tick()
        assert await fired(d) == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]


def test_on_the_night_clocks_fall_back_only_fixed_hour_jobs_skip_the_repeated_hour() -> None:
    """Cron's rule: a job whose hour is fixed does not run again in the repeated hour; one whose hour is
    a wildcard or a step runs by the clock through it."""
    from daemon.engine import schedules

    def fires(cron: str, start: str, end: str) -> list[str]:
        out, t = [], ts(start)
        while (nxt := schedules.next_fire(cron, "Europe/Berlin", t)) is not None and nxt <= ts(end):
            out.append(datetime.fromtimestamp(nxt, UTC).strftime("%H:%M"))
            t = nxt
        return out

    night = ("2026-10-24T23:00:00", "2026-10-25T03:00:00")  # 01:00 CEST .. 04:00 CET (UTC times below)
    assert fires("*/30 2 * * *", *night) == ["00:00", "00:30"]  # 02:00 and 02:30 once each, not four
    assert fires("30 2 * * *", *night) == ["00:30"]
    assert fires("0 * * * *", *night) == ["00:00", "01:00", "02:00", "03:00"]  # 01:00Z is 02:00 again


async def test_a_catch_up_just_before_the_next_slot_does_not_swallow_that_slot(tmp_path: Path) -> None:
    """Hourly job. The daemon comes back at 09:59:59.5 having missed 09:00: one catch-up (right). The
    10:00 slot, half a second later, is a new slot, not a missed one: it must fire."""
    clock = FrozenClock(START)  # 08:00:00Z
    hourly = {"hourly": scheduled("0 * * * *", "hourly")}
    async with serve(tmp_path, hourly, clock=clock):
        pass  # the schedule is seen at 08:00
    clock.advance(2 * 3600 - 0.5)  # down until 09:59:59.5
    async with serve(tmp_path, hourly, clock=clock) as d:
        await d.engine.tick()
        assert await fired(d) == ["2027-01-15T09:00:00Z"]  # one catch-up
        await reject_all(d)
        clock.advance(1.0)  # 10:00:00.5
        await d.engine.tick()
        assert await fired(d) == ["2027-01-15T09:00:00Z", "2027-01-15T10:00:00Z"], "the 10:00 job was skipped"


async def test_a_clock_corrected_after_a_jump_forward_does_not_silence_the_schedule(tmp_path: Path) -> None:
    """The host clock jumps 30 days ahead (bad RTC, restored VM) and NTP corrects it minutes later. The
    nightly job then never fires until the wrong date comes round again: it lost its place."""
    clock = FrozenClock(START)  # 2027-01-15T08:00Z
    async with serve(tmp_path, {"nightly": scheduled("0 3 * * *")}, clock=clock) as d:
        await d.engine.tick()
        clock.advance(30 * 86400)  # the clock jumps
        await d.engine.tick()
        assert await fired(d) == ["2027-01-16T03:00:00Z"]  # one catch-up for the (apparent) gap
        await reject_all(d)
        clock.advance(-30 * 86400 + 600)  # NTP steps it back: 2027-01-15T08:10Z
        for _ in range(3):  # three real nights
            clock.advance(86400)
            await d.engine.tick()
            await reject_all(d)
        got = await fired(d)
    assert "2027-01-17T03:00:00Z" in got and "2027-01-18T03:00:00Z" in got, got


def test_a_cron_that_never_fires_is_refused_at_load() -> None:
    """ "0 0 30 2 *" (30 February) is valid syntax and never fires; asking for its next fire time scanned
    to year 9999 at every engine tick (~130 ms each). It is refused when the runbook loads."""
    import yaml
    from pydantic import ValidationError

    from daemon.runbooks.schema import Runbook

    with pytest.raises(ValidationError, match="never fires"):
        Runbook.model_validate(yaml.safe_load(scheduled("0 0 30 2 *", "feb")))
    Runbook.model_validate(yaml.safe_load(scheduled("0 0 29 2 *", "leap")))  # every fourth year: fine


CHECKED = """
name: nightly-look
triggers:
  - schedule: "0 3 * * *"
    check:
      action: test.look
      with: {what: volumes}
      when: "{{ check.output.stale | length > 0 }}"
      timeout: 5m
target: nightly
approval: {timeout: 48h}
steps:
  - id: report
    action: notify.log
    with: {message: "fired for {{ check.fire_time }}"}
"""


async def _led_again(d: Daemon) -> bool:
    e = d.engine
    return e.leadership.leading and e._led_epoch == e.leadership.epoch and e.routing_live


async def test_a_check_result_from_a_former_leader_does_not_start_a_second_run_for_one_fire(
    tmp_path: Path, postgres_url: str
) -> None:
    """A runs the 16 Jan check and stalls past its lease; B takes over, runs it, records it, starts
    run R1 (rejected). On 17 Jan B's check is running when A leads again; A's stale 16 Jan result then
    records a second time and starts a second run for the 16 Jan fire."""
    probe = Probe()
    probe.hang = True
    probe.items = ["pvc-a"]
    clock = FrozenClock(START)
    config = base_config(tmp_path, state={"url": postgres_url}, ha={"lease": "2s", "renew": "1s"})
    books = {"nightly": CHECKED}
    reg = probe.registry()
    e1 = probe.release
    e2, e3 = asyncio.Event(), asyncio.Event()
    async with (
        serve(tmp_path, books, config=config, registry=reg, clock=clock) as a,
        serve(tmp_path, books, config=config, registry=reg, clock=clock) as b,
    ):
        try:
            assert a.engine.leadership.leading and not b.engine.leadership.leading
            clock.advance(19.5 * 3600)  # past 2027-01-16T03:00Z
            await a.engine.tick()
            await wait_until(lambda: len(probe.calls) == 1)  # A's check hangs (on e1)
            probe.release = e2
            await a.engine.leadership.stop()  # A stalls: its lease goes
            await wait_until(lambda: _led_again(b), timeout=20)
            await wait_until(lambda: len(probe.calls) == 2)  # B runs the pending check (on e2)
            e2.set()
            await b.engine.wait_idle()
            assert await fired(b) == ["2027-01-16T03:00:00Z"]
            await reject_all(b)
            probe.release = e3
            clock.advance(86400)  # 2027-01-17T03:30Z
            await b.engine.tick()
            await wait_until(lambda: len(probe.calls) == 3)  # B's 17 Jan check is running (on e3)
            await b.engine.leadership.stop()
            await a.engine.leadership.start()  # A leads again
            await wait_until(lambda: _led_again(a), timeout=20)
            e1.set()  # A's 16 Jan check finally answers
            await asyncio.sleep(0.5)
            await a.engine.wait_idle()
            got = await fired(a)
        finally:
            for e in (e1, e2, e3):
                e.set()
    assert got.count("2027-01-16T03:00:00Z") == 1, f"runs per fire time: {got}"


async def _metric(d: Daemon, line: str) -> bool:
    async with d.session.get(d.url + "/metrics") as resp:
        return line in await resp.text()


async def test_after_a_failover_no_replica_keeps_reporting_a_check_error_the_leader_cleared(
    tmp_path: Path, postgres_url: str
) -> None:
    """rules/checks.yaml: RunbookdCheckFailing is max over replicas of
    runbookd_check_last_outcome{outcome="error"}. The former leader keeps exporting its last result
    (error) for ever after the new leader records ok, so the alert fires with nothing failing."""
    probe = Probe()
    probe.fail = "the backup target is down"
    clock = FrozenClock(START)
    config = base_config(tmp_path, state={"url": postgres_url}, ha={"lease": "2s", "renew": "1s"})
    books = {"nightly": CHECKED}
    reg = probe.registry()
    error_line = 'runbookd_check_last_outcome{outcome="error",runbook="nightly-look"} 1.0'
    async with (
        serve(tmp_path, books, config=config, registry=reg, clock=clock) as a,
        serve(tmp_path, books, config=config, registry=reg, clock=clock) as b,
    ):
        probe.hang = False
        clock.advance(19.5 * 3600)
        await a.engine.tick()
        await a.engine.wait_idle()
        assert await _metric(a, error_line)
        await a.engine.leadership.stop()  # failover
        await wait_until(lambda: _led_again(b), timeout=20)
        probe.fail = None
        clock.advance(86400)
        await b.engine.tick()
        await b.engine.wait_idle()
        status, body = await b.call("GET", "/api/v1/checks")
        assert status == 200 and body["checks"][0]["outcome"] == "ok", body
        stale = [name for name, d in (("a", a), ("b", b)) if await _metric(d, error_line)]
    assert stale == [], f"replicas still exporting the cleared error: {stale}"
