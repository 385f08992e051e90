"""The lease and its fence, in process on a real PostgreSQL: a takeover grows the epoch, expiry is judged on
the database's clock, and a leader that was replaced, or whose own monotonic clock says its lease may have
run out, commits nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.postgres import PostgresServer

from daemon.errors import LostLeadership
from daemon.store.lease import LeaseLeadership
from daemon.store.postgres import PgSettings, PgStore

LEASE, RENEW = 30.0, 10.0  # long: the background loop never renews during a test; the tests drive it


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(postgres_server: PostgresServer) -> AsyncIterator[PgStore]:
    s = await PgStore.open(PgSettings(postgres_server.fresh_database()))
    yield s
    await s.close()


@pytest.fixture
async def replicas(store: PgStore) -> AsyncIterator[list[LeaseLeadership]]:
    made: list[LeaseLeadership] = []
    yield made
    for lead in made:
        await lead.stop()


def _replica(
    store: PgStore, made: list[LeaseLeadership], clock: FakeMonotonic | None = None
) -> LeaseLeadership:
    lead = LeaseLeadership(store.settings, lease=LEASE, renew=RENEW, monotonic=clock or FakeMonotonic())
    made.append(lead)
    return lead


async def _expire_lease(store: PgStore) -> None:
    """What the database clock does after ``lease`` seconds without renewal."""
    async with store.transaction() as tx:
        await tx.db.execute("UPDATE leader SET expires_at = clock_timestamp() - interval '1 second'")


async def test_one_leader_until_its_lease_expires_then_a_takeover_grows_the_epoch(
    store: PgStore, replicas: list[LeaseLeadership]
) -> None:
    a, b = _replica(store, replicas), _replica(store, replicas)
    await a.start()
    await b.start()
    assert a.leading and a.epoch == 1
    assert not b.leading  # the lease is valid on the database's clock: no takeover
    await b._attempt()
    assert not b.leading

    await _expire_lease(store)
    await b._attempt()
    assert b.leading and b.epoch == 2


async def test_a_replaced_leader_commits_nothing_and_stops_leading(
    store: PgStore, replicas: list[LeaseLeadership]
) -> None:
    a, b = _replica(store, replicas), _replica(store, replicas)
    await a.start()
    await _expire_lease(store)
    await b.start()
    assert a.leading and b.leading  # a has not noticed yet (it was paused, say)

    with pytest.raises(LostLeadership, match="epoch 1 is no longer current"):
        async with store.transaction(a) as tx:
            await tx.kv_put("engine", "probe", {"by": "a"})
    assert not a.leading
    async with store.transaction(b) as tx:  # the new leader's transactions commit
        await tx.kv_put("engine", "probe2", {"by": "b"})
    async with store.transaction() as tx:
        assert await tx.kv_get("engine", "probe") is None
        assert await tx.kv_get("engine", "probe2") == {"by": "b"}


async def test_a_leader_stale_by_its_own_monotonic_clock_stops_even_if_the_database_still_agrees(
    store: PgStore, replicas: list[LeaseLeadership]
) -> None:
    clock = FakeMonotonic()
    a = _replica(store, replicas, clock)
    await a.start()
    assert a.fresh()
    clock.now += LEASE - RENEW - 0.5
    assert a.fresh()
    clock.now += 1.0  # past lease - margin since the last renewal was sent
    with pytest.raises(LostLeadership, match="no longer fresh"):
        async with store.transaction(a) as tx:
            await tx.kv_put("engine", "probe", {"by": "a"})
    assert not a.leading
    async with store.transaction() as tx:
        assert await tx.kv_get("engine", "probe") is None
    # it leads again only through a new takeover (a new epoch, so the engine recovers again)
    await _expire_lease(store)
    await a._attempt()
    assert a.leading and a.epoch == 2


async def test_a_renewal_refused_after_a_takeover_ends_leadership(
    store: PgStore, replicas: list[LeaseLeadership]
) -> None:
    a, b = _replica(store, replicas), _replica(store, replicas)
    await a.start()
    await _expire_lease(store)
    await b._attempt()
    await a._attempt()  # its renewal finds epoch 2 in the row
    assert not a.leading and b.leading


async def test_stopping_releases_the_lease_for_an_immediate_takeover(
    store: PgStore, replicas: list[LeaseLeadership]
) -> None:
    a, b = _replica(store, replicas), _replica(store, replicas)
    await a.start()
    await b.start()
    assert not b.leading
    await a.stop()
    await b._attempt()
    assert b.leading and b.epoch == 2
