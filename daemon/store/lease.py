"""``LeaseLeadership``: which replica leads on PostgreSQL, a lease row in the database (see
``daemon.store.leadership`` for the rules). A module of its own so that a SQLite deployment never imports
psycopg (~90 ms and ~9 MB at start-up)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg
import structlog

from daemon.errors import LostLeadership, StoreUnavailable
from daemon.store.leadership import replica_name
from daemon.store.postgres import PgSettings, connect
from daemon.store.sqlite import Tx

log = structlog.get_logger("runbookd.leadership")

_ACQUIRE = (
    "INSERT INTO leader (id, holder, epoch, expires_at, since)"
    " VALUES (1, %(me)s, 1, clock_timestamp() + make_interval(secs => %(lease)s), clock_timestamp())"
    " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, epoch = leader.epoch + 1,"
    " expires_at = excluded.expires_at, since = excluded.since"
    " WHERE leader.expires_at <= clock_timestamp()"
    " RETURNING epoch"
)
_RENEW = (
    "UPDATE leader SET expires_at = clock_timestamp() + make_interval(secs => %(lease)s)"
    " WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > clock_timestamp()"
    " RETURNING epoch"
)
_RELEASE = (
    "UPDATE leader SET expires_at = clock_timestamp()"
    " WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > clock_timestamp()"
)
_HOLDER = (
    "SELECT holder, epoch, EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 AS remaining"
    " FROM leader WHERE id = 1"
)
_FENCE = (
    "SELECT epoch FROM leader WHERE id = 1 AND holder = ? AND epoch = ? AND expires_at > clock_timestamp()"
    " FOR SHARE"
)


class LeaseLeadership:
    """A lease in PostgreSQL, renewed every ``renew`` seconds on a connection of its own."""

    def __init__(
        self,
        settings: PgSettings,
        *,
        lease: float,
        renew: float,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._monotonic = monotonic
        self.lease = lease
        self.renew = renew
        self.holder = holder or replica_name()
        self._epoch: int | None = None
        self._renewed_at = 0.0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[bool], None]] = []
        self._seen_holder: str | None = None
        self._next_try: float = renew

    # ------------------------------------------------------------------ state

    @property
    def leading(self) -> bool:
        return self._epoch is not None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def fresh(self) -> bool:
        """Leading and renewed within ``lease - renew`` seconds (monotonic). A stale leader steps down at
        once: it will lead again only by a new takeover (a new epoch, with recovery), never silently."""
        if not self.leading:
            return False
        age = self._monotonic() - self._renewed_at
        if age < self.lease - self.renew:
            return True
        self._lose(f"lease not renewed for {age:.1f}s (monotonic clock)")
        return False

    def on_change(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)
        callback(self.leading)

    def _changed(self) -> None:
        for cb in self._callbacks:
            cb(self.leading)

    def _acquired(self, epoch: int, at: float) -> None:
        self._epoch, self._renewed_at = epoch, at
        log.warning("leadership.acquired", holder=self.holder, epoch=epoch, lease=self.lease)
        self._changed()

    def _lose(self, reason: str) -> None:
        if self._epoch is None:
            return
        epoch, self._epoch = self._epoch, None
        log.warning("leadership.lost", holder=self.holder, epoch=epoch, reason=reason)
        self._changed()

    # ------------------------------------------------------------------ fencing

    async def verify(self, tx: Tx) -> None:
        """Inside a leader's transaction, right before COMMIT: raise LostLeadership unless this replica
        still holds the current epoch and a fresh lease."""
        epoch = self._epoch
        if epoch is None:
            raise LostLeadership("this replica is not the leader")
        if not self.fresh():
            raise LostLeadership("this replica's lease is no longer fresh; it stopped leading")
        row = await tx._one(_FENCE, (self.holder, epoch))
        if row is None:
            self._lose("fenced: another replica took over, or the lease expired")
            raise LostLeadership(f"epoch {epoch} is no longer current; this replica stopped leading")

    # ------------------------------------------------------------------ lease loop

    async def start(self) -> None:
        """Try once at once (a lone replica leads from its first second), then keep renewing/trying."""
        await self._attempt()
        self._task = asyncio.create_task(self._loop(), name="leadership.lease")

    async def stop(self) -> None:
        """Stop renewing and release the lease, so a standby takes over at its next try, not after expiry."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        epoch = self._epoch
        if epoch is not None:
            with suppress(psycopg.Error, StoreUnavailable, TimeoutError):
                conn = await self._connection()
                async with asyncio.timeout(self.renew):
                    await conn.execute(_RELEASE, {"me": self.holder, "epoch": epoch})
            self._lose("stopping: lease released")
        if self._conn is not None:
            with suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._next_try)
            await self._attempt()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = None
            self._conn = await connect(self._settings)
        return self._conn

    async def _attempt(self) -> None:
        sent = self._monotonic()  # the lease the database grants runs from no earlier than this
        epoch = self._epoch
        args = {"me": self.holder, "lease": self.lease, "epoch": epoch}
        self._next_try = self.renew
        try:
            conn = await self._connection()
            async with asyncio.timeout(self.renew):
                cur = await conn.execute(_RENEW if epoch is not None else _ACQUIRE, args)
                row = await cur.fetchone()
                holder = None
                if row is None and epoch is None:
                    holder = await (await conn.execute(_HOLDER)).fetchone()
        except (psycopg.Error, StoreUnavailable, TimeoutError) as exc:
            log.warning("leadership.renew_failed", holder=self.holder, error=str(exc).splitlines()[0:1])
            if self._conn is not None:
                with suppress(psycopg.Error):
                    await self._conn.close()
                self._conn = None
            self.fresh()  # steps down once the lease can no longer be counted on
            return
        if epoch is not None:
            if row is None:
                self._lose("lease taken over or expired before renewal")
            elif self._epoch == epoch:
                self._renewed_at = sent
            return
        if row is not None:
            self._acquired(int(row[0]), sent)
        elif holder is not None:
            # Try again right after the lease runs out: a duration on the database's clock, so the
            # replicas' clocks are never compared. Never later than the next renewal period.
            self._next_try = min(self.renew, max(0.05, float(holder[2]) + 0.05))
            if holder[0] != self._seen_holder:
                self._seen_holder = str(holder[0])
                log.info("leadership.standby", holder=self.holder, leader=holder[0], epoch=int(holder[1]))
