"""Copy a whole installation from one store to another (``runbookd state copy``): runs, steps, approvals,
timelines, alert links, the inbox with its receipts, and the key-value records (schedules, cooldown
memory, Slack replay records). Every table both stores have is copied, so tables added later come along.

The copy reads in one transaction and writes in one: a failed copy leaves the target as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.errors import StoreUnavailable
from daemon.store.base import StateStore
from daemon.store.sqlite import Tx

_SKIP = {"schema_migrations", "sqlite_sequence", "leader"}
"""Bookkeeping of each store itself, never copied."""
_PAGE = 1000


class TargetNotEmpty(StoreUnavailable):
    """The target already holds an installation; copying over it needs ``--force``."""


class TargetInUse(StoreUnavailable):
    """A runbookd replica holds a live lease on the target store."""


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)


async def _tables(tx: Tx, backend: str) -> list[str]:
    if backend == "sqlite":
        rows = await tx._all("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    else:
        rows = await tx._all(
            "SELECT table_name AS name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    return [str(r["name"]) for r in rows if str(r["name"]) not in _SKIP]


async def _tables_all(tx: Tx, backend: str) -> set[str]:
    if backend == "sqlite":
        return set()  # SQLite: the copy holds the file's lock, so no serve runs on it
    rows = await tx._all(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return {str(r["name"]) for r in rows}


async def _columns(tx: Tx, backend: str, table: str) -> list[str]:
    if backend == "sqlite":
        rows = await tx._all("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))
    else:
        rows = await tx._all(
            "SELECT column_name AS name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
    return [str(r["name"]) for r in rows]


async def _count(tx: Tx, table: str) -> int:
    row = await tx._one(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608 (names from the catalog)
    return int(row["n"]) if row else 0


async def copy_state(source: StateStore, target: StateStore, *, force: bool = False) -> CopyReport:
    """Copy every table both stores have. Refuses a target holding rows unless ``force`` (then those
    tables are emptied first, in the same transaction)."""
    report = CopyReport()
    async with source.transaction() as src, target.transaction() as dst:
        src_tables = await _tables(src, source.backend)
        dst_tables = set(await _tables(dst, target.backend))
        tables = [t for t in src_tables if t in dst_tables]
        if "leader" in await _tables_all(dst, target.backend):
            live = await dst._one("SELECT holder FROM leader WHERE id = 1 AND expires_at > clock_timestamp()")
            if live is not None:
                raise TargetInUse(
                    f"a runbookd replica ({live['holder']}) is serving the target store; stop every "
                    "replica first (even --force never copies under a running daemon)"
                )
        filled = [t for t in tables if await _count(dst, t)]
        if filled and not force:
            raise TargetNotEmpty(
                f"the target store already holds data (tables {', '.join(filled)}); "
                "copy into an empty database, or pass --force to replace it"
            )
        order = "rowid" if source.backend == "sqlite" else "ctid"
        for table in tables:
            if table in filled:
                await dst.db.execute(f"DELETE FROM {table}")  # noqa: S608
            dst_cols = set(await _columns(dst, target.backend, table))
            cols = [c for c in await _columns(src, source.backend, table) if c in dst_cols]
            names = ", ".join(cols)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})"  # noqa: S608
            select = f"SELECT {names} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?"  # noqa: S608
            copied, offset = 0, 0
            while True:
                rows = await src._all(select, (_PAGE, offset))
                if not rows:
                    break
                await dst.db.executemany(insert, [tuple(r[c] for c in cols) for r in rows])
                copied += len(rows)
                offset += _PAGE
            report.rows[table] = copied
        if target.backend == "postgresql":
            await _advance_identities(dst)
    return report


async def _advance_identities(tx: Tx) -> None:
    """Identity columns (timeline.seq) continue after the highest copied value."""
    rows = await tx._all(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    for r in rows:
        table, column = str(r["table_name"]), str(r["column_name"])
        await tx._all(
            f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, false)"  # noqa: S608
            f" FROM {table}",
            (table, column),
        )
