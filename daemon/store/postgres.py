"""PostgreSQL store (production and HA): the same ``Tx`` SQL as SQLite, over psycopg 3's async connection.

Transactions are serialised across *all* replicas by a transaction-scoped advisory lock, so they keep the
semantics of SQLite's ``BEGIN IMMEDIATE`` (one writer at a time, no lost updates between a replica taking
an approval and the leader expiring the same step). Each replica holds one data connection; a broken one
is replaced at the next transaction. Migrations run at start under a session advisory lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.rows import RowMaker

from daemon.errors import StoreUnavailable
from daemon.store import migrations
from daemon.store.base import Fence, InboxRow, Row, storable
from daemon.store.sqlite import SCHEMA, Tx

log = structlog.get_logger("runbookd.store")

TX_LOCK = 0x72756E62  # "runb": pg_advisory_xact_lock key serialising every store transaction
MIGRATE_LOCK = 0x72756E6D  # "runm": pg_advisory_lock key held while migrations run
INBOX_CHANNEL = "runbookd_inbox"
"""NOTIFY channel: a notification was committed to the inbox (empty payload), or a follower handed work
to the leader (payload ``HANDOFF``)."""
HANDOFF = "handoff"
INBOX_LOCK = 0x72756E69  # "runi": pg_advisory_xact_lock key serialising inbox writers (receipt numbers)


@dataclass(frozen=True)
class PgSettings:
    """Where and how to connect. The password never appears in the URL (it comes from a secret ref)."""

    url: str
    password: str | None = None
    sslmode: str | None = None
    sslrootcert: str | None = None
    connect_timeout: float = 5.0
    busy_timeout: float = 5.0
    """How long a transaction waits for the store-wide lock before the store counts as unavailable."""
    idle_in_transaction: float = 15.0
    """The server ends a session idle inside a transaction this long (a paused leader holding a lock)."""

    def connect_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout)), "autocommit": True}
        if self.password is not None:
            kw["password"] = self.password
        if self.sslmode:
            kw["sslmode"] = self.sslmode
        if self.sslrootcert:
            kw["sslrootcert"] = self.sslrootcert
        kw["options"] = (
            f"-c lock_timeout={int(self.busy_timeout * 1000)}"
            f" -c idle_in_transaction_session_timeout={int(self.idle_in_transaction * 1000)}"
            " -c synchronous_commit=on"  # a commit is on the server's disk, whatever the server default
        )
        return kw


class PgRow(dict[str, Any]):
    """A row readable by column name (``row["id"]``) and by position (``row[0]``), like ``sqlite3.Row``."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _pg_row(cursor: psycopg.AsyncCursor[Any]) -> RowMaker[PgRow]:
    names = [c.name for c in cursor.description or ()]

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(zip(names, values, strict=True))

    return make


_SQL_CACHE: dict[str, str] = {}


def to_pg(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (a literal ``%`` doubled)."""
    done = _SQL_CACHE.get(sql)
    if done is None:
        done = _SQL_CACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return done


def _params(parameters: Any) -> tuple[Any, ...]:
    """The parameters as psycopg takes them. PostgreSQL cannot store a NUL character in text, and psycopg
    refuses one before sending: a deterministic error that would be reported as "store unavailable, retry"
    (routing, say, retrying one record for ever). The API refuses NUL at the door; whatever still carries
    one (a remote system's error message) is kept with U+FFFD in its place (``storable``)."""
    return storable(parameters or (), nul=True)


class PgDb:
    """The ``SqlDb`` calls ``Tx`` makes, over one psycopg connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    # Driver errors surface as StoreUnavailable, as sqlite3 errors do through Store.transaction: callers
    # (routing's "one bad notification" rule) tell store failures from their own.
    async def execute(self, sql: str, parameters: Any = (), /) -> None:
        try:
            await self.conn.execute(to_pg(sql), _params(parameters))
        except psycopg.Error as exc:
            raise StoreUnavailable(f"state store error: {_safe(exc)}") from exc

    async def execute_fetchall(self, sql: str, parameters: Any = (), /) -> list[Row]:
        try:
            async with self.conn.cursor(row_factory=_pg_row) as cur:
                await cur.execute(to_pg(sql), _params(parameters))
                return list(await cur.fetchall()) if cur.description else []
        except psycopg.Error as exc:
            raise StoreUnavailable(f"state store error: {_safe(exc)}") from exc

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]], /) -> None:
        try:
            async with self.conn.cursor() as cur:
                await cur.executemany(to_pg(sql), [_params(p) for p in parameters])
        except psycopg.Error as exc:
            raise StoreUnavailable(f"state store error: {_safe(exc)}") from exc

    async def flush(self) -> None:
        return None  # every statement was sent when it was made

    async def rollback_to(self, savepoint: str, /) -> None:
        await self.execute(f"ROLLBACK TO {savepoint}")
        await self.execute(f"RELEASE {savepoint}")


class PgTx(Tx):
    """``Tx`` on PostgreSQL: the same SQL, plus what only a shared store needs."""

    async def wake_leader(self) -> None:
        await self.db.execute("SELECT pg_notify(?, ?)", (INBOX_CHANNEL, HANDOFF))


async def connect(settings: PgSettings) -> psycopg.AsyncConnection[Any]:
    try:
        async with asyncio.timeout(settings.connect_timeout + 1):  # not wait_for: see Engine._tick_loop
            return await psycopg.AsyncConnection.connect(settings.url, **settings.connect_kwargs())
    except (psycopg.Error, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"cannot connect to the PostgreSQL state store: {_safe(exc)}") from exc


def _safe(exc: BaseException) -> str:
    """The driver's message, first line only (never a connection string with secrets)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Bring the schema to the latest version under a session advisory lock; the versions applied."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        await conn.execute(migrations.VERSIONS_TABLE.replace("INTEGER", "BIGINT"))
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {int(r[0]) for r in await cur.fetchall()}
        steps = [migrations.Migration(1, "base schema", SCHEMA), *migrations.MIGRATIONS]
        for m in steps:
            if m.version in done:
                continue
            async with conn.transaction():
                for stmt in migrations.postgresql_sql(m.sql):
                    await conn.execute(stmt.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name)
                )
            applied.append(m.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    return applied


class _Session:
    """One connection and the asyncio lock that serialises its transactions in this process."""

    def __init__(self, settings: PgSettings, conn: psycopg.AsyncConnection[Any] | None) -> None:
        self.settings = settings
        self.conn = conn
        self.lock = asyncio.Lock()

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """The open connection, or a new one in place of a closed or broken one."""
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                with suppress(psycopg.Error):
                    await self.conn.close()
            self.conn = None
            self.conn = await connect(self.settings)
        return self.conn

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    @asynccontextmanager
    async def transaction(
        self, lock_key: int, fence: Fence | None, notify: str | None = None
    ) -> AsyncIterator[Tx]:
        async with self.lock:
            conn = await self.connection()
            try:
                await conn.execute("BEGIN")
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            except psycopg.Error as exc:
                await _rollback(conn)
                raise StoreUnavailable(f"state store unavailable: {_safe(exc)}") from exc
            try:
                tx = PgTx(PgDb(conn))
                yield tx
                if fence is not None:
                    await fence.verify(tx)
                if notify is not None:  # delivered to listeners when (and only if) this commits
                    await conn.execute("SELECT pg_notify(%s, '')", (notify,))
            except psycopg.Error as exc:
                await _rollback(conn)
                raise StoreUnavailable(f"state store error: {_safe(exc)}") from exc
            except BaseException:
                await _rollback(conn)
                raise
            try:
                await conn.execute("COMMIT")
            except psycopg.Error as exc:
                await _rollback(conn)
                raise StoreUnavailable(f"state store could not commit: {_safe(exc)}") from exc


class PgStore:
    """The PostgreSQL backend of ``daemon.store.base.StateStore``."""

    shared = True
    backend = "postgresql"

    def __init__(self, settings: PgSettings, conn: psycopg.AsyncConnection[Any]) -> None:
        self.settings = settings
        self._main = _Session(settings, conn)
        self._intake = _Session(settings, None)  # connected at the first webhook

    @classmethod
    async def open(cls, settings: PgSettings, *, migrate_schema: bool = True) -> PgStore:
        conn = await connect(settings)
        if migrate_schema:
            try:
                await migrate(conn)
            except psycopg.Error as exc:
                await conn.close()
                raise StoreUnavailable(f"cannot migrate the PostgreSQL state store: {_safe(exc)}") from exc
        return cls(settings, conn)

    async def close(self) -> None:
        await self._intake.close()
        await self._main.close()

    def transaction(self, fence: Fence | None = None) -> AbstractAsyncContextManager[Tx]:
        """Serialised across replicas (advisory xact lock); ``fence`` is verified right before COMMIT."""
        return self._main.transaction(TX_LOCK, fence)

    def intake(self) -> AbstractAsyncContextManager[Tx]:
        """The inbox's own connection and lock: storing a webhook never waits behind routing or a step's
        transaction. Inbox writers (of every replica) are serialised among themselves only."""
        return self._intake.transaction(INBOX_LOCK, None, notify=INBOX_CHANNEL)

    async def append_inbox(self, rows: Sequence[InboxRow]) -> int:
        async with self.intake() as tx:
            return await tx.append_inbox(rows)

    async def watch_inbox(self, wake: Callable[[str], None]) -> None:
        """Call ``wake`` whenever any replica commits a notification to the inbox (LISTEN/NOTIFY on a
        connection of its own), so the leader routes what a follower stored at once. Runs until
        cancelled; reconnects after a failure."""
        while True:
            try:
                conn = await connect(self.settings)
                try:
                    await conn.execute(f"LISTEN {INBOX_CHANNEL}")
                    wake(HANDOFF)  # anything stored or handed over while not listening
                    async for note in conn.notifies():
                        wake(note.payload)
                finally:
                    with suppress(psycopg.Error):
                        await conn.close()
            except (psycopg.Error, StoreUnavailable) as exc:
                log.warning("store.inbox_watch_failed", error=_safe(exc), retry_in=1.0)
            await asyncio.sleep(1.0)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.busy_timeout), self._main.lock:
                conn = await self._main.connection()
                await conn.execute("SELECT 1")
        except (psycopg.Error, StoreUnavailable, TimeoutError):
            return False
        return True


async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    with suppress(psycopg.Error):
        await conn.execute("ROLLBACK")
