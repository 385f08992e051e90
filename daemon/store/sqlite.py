"""SQLite (WAL) store. One connection; transactions are serialised by an asyncio lock and committed
before the caller acts on what they record.

``synchronous=FULL``: a commit is on disk (the WAL is fsynced) before it returns, so a power loss (a node
going NotReady) loses nothing that was acknowledged; group commit in the inbox keeps the cost per webhook
small. One process writes the file: ``serve`` holds ``state.lock`` (see ``daemon.store.lock``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from daemon.errors import StoreUnavailable
from daemon.kits import storedjson
from daemon.store import migrations
from daemon.store.base import Fence, InboxRow, Row, SqlDb, StateStore, storable
from daemon.store.intake import IntakeWriter
from daemon.store.records import (
    ApprovalRecord,
    EventRecord,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
    UndoRecord,
    UndoState,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, runbook TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL,
  trigger TEXT NOT NULL, requester TEXT, params TEXT NOT NULL, context TEXT NOT NULL, definition TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, dry_run INTEGER NOT NULL, ended_at REAL,
  current_step INTEGER NOT NULL DEFAULT 0, mutated INTEGER NOT NULL DEFAULT 0,
  alert_resolved INTEGER NOT NULL DEFAULT 0, outcome TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_target ON runs (runbook, target, created_at);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL, idx INTEGER NOT NULL, step_id TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL,
  mutating INTEGER NOT NULL, idempotent INTEGER NOT NULL, plan TEXT, plan_hash TEXT, requested_at REAL,
  deadline REAL, started_at REAL, finished_at REAL, output TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS steps_by_state ON steps (state);
CREATE TABLE IF NOT EXISTS approvals (
  run_id TEXT NOT NULL, step_id TEXT NOT NULL, identity TEXT NOT NULL, via TEXT NOT NULL,
  plan_hash TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (run_id, step_id, identity, plan_hash)
);
CREATE TABLE IF NOT EXISTS timeline (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at REAL NOT NULL, event TEXT NOT NULL,
  actor TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_by_run ON timeline (run_id, seq);
CREATE TABLE IF NOT EXISTS alert_links (
  fingerprint TEXT NOT NULL, runbook TEXT NOT NULL, run_id TEXT NOT NULL, resolved INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (fingerprint, runbook, run_id)
);
-- alerts_received: no longer written (whether an alert is new for a run is what alert_links says);
-- kept because migrations only expand, its old rows pruned after a week.
CREATE TABLE IF NOT EXISTS alerts_received (
  fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, status TEXT NOT NULL, alertname TEXT NOT NULL,
  labels TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, times INTEGER NOT NULL,
  PRIMARY KEY (fingerprint, starts_at, status)
);
CREATE TABLE IF NOT EXISTS inbox (
  seq INTEGER PRIMARY KEY, received_at REAL NOT NULL, alerts INTEGER NOT NULL, payload TEXT NOT NULL,
  routed_at REAL, result TEXT
);
CREATE INDEX IF NOT EXISTS inbox_unrouted ON inbox (seq) WHERE routed_at IS NULL;
CREATE INDEX IF NOT EXISTS steps_by_deadline ON steps (state, deadline);
CREATE TABLE IF NOT EXISTS kv (
  namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (namespace, key)
);
"""

R = TypeVar("R", RunRecord, StepRecord)
_KEYS = {"runs": ("id",), "steps": ("run_id", "idx"), "undos": ("run_id", "idx")}
"""Primary keys of the tables written whole by ``Tx._upsert``."""
_JSON_FIELDS = {"params", "context", "definition", "plan", "output"}
_BOOL_FIELDS = {"dry_run", "mutated", "alert_resolved", "mutating", "idempotent"}
_INBOX_INSERT = (
    "INSERT INTO inbox (seq, received_at, alerts, payload, routed_at, result) VALUES (?,?,?,?,?,?)"
)
_LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) AS n FROM inbox"


_MARK_ROUTED = "UPDATE inbox SET routed_at = ?, result = ?, payload = '' WHERE seq = ?"
"""A routed notification keeps its receipt, not its payload: nothing reads it again (the timeline and
``alert_links`` record its alerts), and rewriting the whole row (kilobytes of JSON, in overflow pages)
with its receipt was a quarter of routing's SQLite work."""
_MARK_UNROUTABLE = "UPDATE inbox SET routed_at = ?, result = ? WHERE seq = ?"
"""One that could not be routed (its result is an ``error``) keeps its payload: nothing else records
which alerts it held, and a person may need them."""


def _mark_statement(result: dict[str, Any]) -> str:
    return _MARK_UNROUTABLE if "error" in result else _MARK_ROUTED


_MANY_ROWS = 100
"""Rows per multi-row statement (8 parameters a row stays under SQLite's oldest variable limit, 999)."""


_DEFINITION_JSON: dict[int, tuple[Any, str]] = {}
"""id(definition) -> (definition, its JSON): runs started from one runbook share one definition object."""


def _dumps(key: str, v: Any) -> str:
    if key != "definition":
        return json.dumps(v, sort_keys=True, default=str)
    cached = _DEFINITION_JSON.get(id(v))
    if cached is None or cached[0] is not v:
        if len(_DEFINITION_JSON) >= 256:
            _DEFINITION_JSON.clear()
        cached = _DEFINITION_JSON[id(v)] = (v, json.dumps(v, sort_keys=True, default=str))
    return cached[1]


_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _names(cls: type[Any]) -> tuple[str, ...]:
    """A record class's field names (``dataclasses.fields`` builds them anew on every call)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _to_row(rec: RunRecord | StepRecord) -> dict[str, Any]:
    row = {name: getattr(rec, name) for name in _names(type(rec))}  # shallow: JSON fields are dumped below
    for k, v in row.items():
        if k in _JSON_FIELDS and v is not None:
            row[k] = _dumps(k, v)
        elif k in _BOOL_FIELDS:
            row[k] = int(v)
        elif k == "state":
            row[k] = str(v)
    return row


def _from_row(cls: type[R], row: Row) -> R:
    values: dict[str, Any] = {}
    for name in _names(cls):
        v = row[name]
        if name in _JSON_FIELDS and v is not None:
            v = json.loads(v)
        elif name in _BOOL_FIELDS:
            v = bool(v)
        elif name == "state":
            v = RunState(v) if cls is RunRecord else StepState(v)
        values[name] = v
    return cls(**values)


@functools.lru_cache(maxsize=32)
def _upsert_sql(table: str, cols: tuple[str, ...]) -> str:
    keys = _KEYS[table]
    sets = ", ".join(f"{k} = excluded.{k}" for k in cols if k not in keys)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"  # noqa: S608
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )


class Tx:
    """One open transaction. Only valid inside ``Store.transaction()``.

    The SQL here is shared by both backends (``?`` placeholders, ``ON CONFLICT`` upserts, ``RETURNING``):
    ``daemon.store.postgres`` runs these same methods over its connection adapter."""

    def __init__(self, db: SqlDb) -> None:
        self.db = db

    # One aiosqlite round trip per statement (execute + fetch + close would be three thread hand-offs).
    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        return list(await self.db.execute_fetchall(sql, args))

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Row | None:
        rows = await self.db.execute_fetchall(sql, args)
        return next(iter(rows), None)

    async def _upsert(self, table: str, row: dict[str, Any]) -> None:
        """Insert or replace a whole row (portable SQL: SQLite and PostgreSQL both run it)."""
        await self.db.execute(_upsert_sql(table, tuple(row)), tuple(row.values()))

    async def _upsert_many(self, table: str, rows: list[dict[str, Any]]) -> None:
        """``_upsert`` for rows with the same columns, in one statement."""
        if rows:
            await self.db.executemany(_upsert_sql(table, tuple(rows[0])), [tuple(r.values()) for r in rows])

    # runs
    async def save_run(self, run: RunRecord) -> None:
        await self._upsert("runs", _to_row(run))

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _from_row(RunRecord, row) if row else None

    async def list_runs(self, state: str | None = None, limit: int = 200) -> list[RunRecord]:
        if state:
            rows = await self._all(
                "SELECT * FROM runs WHERE state = ? ORDER BY created_at DESC LIMIT ?", (state, limit)
            )
        else:
            rows = await self._all("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_from_row(RunRecord, r) for r in rows]

    async def run_summaries(self, state: str | None = None, limit: int = 200) -> list[tuple[Row, list[Row]]]:
        """``list_runs`` without what alerts and actions fill (params, context, definition; each step's
        plan and output): each run's other columns, and its steps' index, id, action, state and mutating,
        in one statement per 100 runs. A list of runs stays small whatever the alerts carried (an
        adversarial pass: 80 runs of 1 MB of labels each made the full list 70 MB and ~1 s of event loop)."""
        where, args = ("WHERE state = ? ", (state,)) if state else ("", ())
        runs = await self._all(
            "SELECT id, runbook, target, state, trigger, requester, dry_run, created_at, updated_at,"  # noqa: S608
            " ended_at, current_step, alert_resolved, outcome"
            f" FROM runs {where}ORDER BY created_at DESC LIMIT ?",
            (*args, limit),
        )
        steps: dict[str, list[Row]] = {str(r["id"]): [] for r in runs}
        ids = list(steps)
        for i in range(0, len(ids), _MANY_ROWS):
            chunk = ids[i : i + _MANY_ROWS]
            rows = await self._all(
                "SELECT run_id, idx, step_id, action, state, mutating FROM steps"  # noqa: S608
                f" WHERE run_id IN ({', '.join('?' * len(chunk))}) ORDER BY run_id, idx",
                tuple(chunk),
            )
            for row in rows:
                steps[str(row["run_id"])].append(row)
        return [(r, steps[str(r["id"])]) for r in runs]

    async def active_runs(self) -> list[RunRecord]:
        states = tuple(s.value for s in RunState if s.active)
        rows = await self._all(
            f"SELECT * FROM runs WHERE state IN ({', '.join('?' * len(states))}) ORDER BY created_at",  # noqa: S608
            states,
        )
        return [_from_row(RunRecord, r) for r in rows]

    async def active_run_for(self, runbook: str, target: str) -> RunRecord | None:
        states = tuple(s.value for s in RunState if s.active)
        row = await self._one(
            f"SELECT * FROM runs WHERE runbook = ? AND target = ? AND state IN ({', '.join('?' * len(states))})",  # noqa: S608
            (runbook, target, *states),
        )
        return _from_row(RunRecord, row) if row else None

    async def active_run_ref(self, runbook: str, target: str) -> tuple[str, bool] | None:
        """(id, alert_resolved) of the active run for a target: the cheap check on every repeated alert."""
        states = tuple(s.value for s in RunState if s.active)
        row = await self._one(
            f"SELECT id, alert_resolved FROM runs WHERE runbook = ? AND target = ? AND state IN ({', '.join('?' * len(states))})",  # noqa: S608
            (runbook, target, *states),
        )
        return (str(row["id"]), bool(row["alert_resolved"])) if row else None

    async def set_alert_firing(self, run_id: str) -> None:
        await self.db.execute("UPDATE runs SET alert_resolved = 0 WHERE id = ?", (run_id,))

    async def run_history(self, runbook: str, target: str, since: float) -> tuple[float | None, int]:
        """When the last ended run of (runbook, target) ended (None: none has), and how many of its runs
        were created at or after ``since``: what policy needs before a new run, in one round trip."""
        row = await self._one(
            "SELECT MAX(ended_at) AS t, COALESCE(SUM(CASE WHEN created_at >= ? THEN 1 ELSE 0 END), 0) AS n"
            " FROM runs WHERE runbook = ? AND target = ?",
            (since, runbook, target),
        )
        if row is None:
            return None, 0
        return (float(row["t"]) if row["t"] is not None else None), int(row["n"])

    async def count_runs_by_state(self) -> dict[str, int]:
        rows = await self._all("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    # steps
    async def save_step(self, step: StepRecord) -> None:
        await self._upsert("steps", _to_row(step))

    async def save_steps(self, steps: list[StepRecord]) -> None:
        """``save_step`` for many, in one statement (a new run's steps)."""
        await self._upsert_many("steps", [_to_row(st) for st in steps])

    async def steps_of(self, run_id: str) -> list[StepRecord]:
        rows = await self._all("SELECT * FROM steps WHERE run_id = ? ORDER BY idx", (run_id,))
        return [_from_row(StepRecord, r) for r in rows]

    async def steps_in_state(self, *states: StepState) -> list[StepRecord]:
        marks = ", ".join("?" * len(states))
        rows = await self._all(f"SELECT * FROM steps WHERE state IN ({marks})", tuple(str(s) for s in states))  # noqa: S608
        return [_from_row(StepRecord, r) for r in rows]

    async def running_mutating_steps(self) -> int:
        row = await self._one("SELECT COUNT(*) AS n FROM steps WHERE state = 'running' AND mutating = 1")
        return int(row["n"]) if row else 0

    async def oldest_awaiting_approval(self) -> float | None:
        row = await self._one("SELECT MIN(requested_at) AS t FROM steps WHERE state = 'awaiting_approval'")
        return float(row["t"]) if row and row["t"] is not None else None

    # approvals
    async def add_approval(self, a: ApprovalRecord) -> None:
        await self.db.execute(
            "INSERT INTO approvals (run_id, step_id, identity, via, plan_hash, at) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT DO NOTHING",
            (a.run_id, a.step_id, a.identity, a.via, a.plan_hash, a.at),
        )

    async def approvals_of(self, run_id: str) -> list[ApprovalRecord]:
        rows = await self._all("SELECT * FROM approvals WHERE run_id = ? ORDER BY at", (run_id,))
        return [ApprovalRecord(**dict(r)) for r in rows]

    # timeline
    async def add_event(self, ev: EventRecord) -> None:
        await self.db.execute(
            "INSERT INTO timeline (run_id, at, event, actor, detail) VALUES (?,?,?,?,?)",
            (ev.run_id, ev.at, ev.event, ev.actor, json.dumps(ev.detail, sort_keys=True, default=str)),
        )

    async def events_of(self, run_id: str) -> list[EventRecord]:
        rows = await self._all(
            "SELECT run_id, at, event, actor, detail FROM timeline WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [
            EventRecord(r["run_id"], r["at"], r["event"], r["actor"], json.loads(r["detail"])) for r in rows
        ]

    # alerts
    async def link_alert(self, fingerprint: str, runbook: str, run_id: str) -> None:
        """Attach a firing alert to a run (again firing if it had resolved)."""
        await self.db.execute(
            "INSERT INTO alert_links (fingerprint, runbook, run_id, resolved) VALUES (?,?,?,0)"
            " ON CONFLICT (fingerprint, runbook, run_id) DO UPDATE SET resolved = 0",
            (fingerprint, runbook, run_id),
        )

    async def resolve_alert(self, fingerprint: str) -> set[str]:
        """Mark the alert's links resolved; the runs whose link was firing until now."""
        rows = await self.db.execute_fetchall(
            "UPDATE alert_links SET resolved = 1 WHERE fingerprint = ? AND resolved = 0 RETURNING run_id",
            (fingerprint,),
        )
        return {str(r[0]) for r in rows}

    async def firing_alerts_of(self, run_id: str) -> int:
        row = await self._one(
            "SELECT COUNT(*) AS n FROM alert_links WHERE run_id = ? AND resolved = 0", (run_id,)
        )
        return int(row["n"]) if row else 0

    async def runs_for_alert(self, fingerprint: str) -> list[RunRecord]:
        rows = await self._all(
            "SELECT runs.* FROM runs JOIN alert_links ON alert_links.run_id = runs.id "
            "WHERE alert_links.fingerprint = ?",
            (fingerprint,),
        )
        return [_from_row(RunRecord, r) for r in rows]

    async def prune_alerts(self, before: float) -> None:
        await self.db.execute("DELETE FROM alerts_received WHERE last_seen < ?", (before,))

    # inbox: Alertmanager notifications, stored before they are answered and routed after
    async def append_inbox(self, rows: Sequence[InboxRow]) -> int:
        """Number ``rows`` after the last receipt and add them; the first receipt (``StateStore.append_inbox``)."""
        first = await self.last_inbox_seq() + 1
        await self.db.executemany(_INBOX_INSERT, [(first + i, *row) for i, row in enumerate(rows)])
        return first

    async def unrouted(self, limit: int) -> list[tuple[int, str]]:
        rows = await self._all(
            "SELECT seq, payload FROM inbox WHERE routed_at IS NULL ORDER BY seq LIMIT ?", (limit,)
        )
        return [(int(r["seq"]), str(r["payload"])) for r in rows]

    async def mark_routed(self, seq: int, at: float, result: dict[str, Any]) -> None:
        await self.mark_routed_many([(seq, at, result)])

    async def receipt(self, seq: int) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT seq, received_at, alerts, routed_at, result FROM inbox WHERE seq = ?", (seq,)
        )
        if row is None:
            return None
        return {
            "receipt": int(row["seq"]),
            "received_at": float(row["received_at"]),
            "alerts": int(row["alerts"]),
            "routed_at": row["routed_at"],
            "result": json.loads(row["result"]) if row["result"] else None,
        }

    async def last_inbox_seq(self) -> int:
        row = await self._one(_LAST_SEQ)
        return int(row["n"]) if row else 0

    async def prune_inbox(self, before: float) -> None:
        """Forget routed notifications older than ``before``; never the newest (receipts are numbered after
        it: its number must not be handed out again)."""
        await self.db.execute(
            "DELETE FROM inbox WHERE routed_at IS NOT NULL AND routed_at < ?"
            " AND seq < (SELECT MAX(seq) FROM inbox)",
            (before,),
        )

    async def steps_due_before(self, until: float) -> list[StepRecord]:
        """Steps awaiting approval whose deadline is at or before ``until`` (uses steps_by_deadline)."""
        rows = await self._all(
            "SELECT * FROM steps WHERE state = 'awaiting_approval' AND deadline IS NOT NULL AND deadline <= ?",
            (until,),
        )
        return [_from_row(StepRecord, r) for r in rows]

    @asynccontextmanager
    async def savepoint(self, name: str) -> AsyncIterator[None]:
        """A nested transaction: on error, undo only what was done inside it, and re-raise. On SQLite,
        statements still queued are sent as it begins and before it ends (``_WriteBehind``), so that a
        statement fails inside the savepoint it was made in."""
        await self.db.execute(f"SAVEPOINT {name}")
        await self.db.flush()  # what came before fails here, outside it; the savepoint exists from now
        try:
            yield
            await self.db.flush()
        except BaseException:
            await self.db.rollback_to(name)
            raise
        await self.db.execute(f"RELEASE {name}")

    # key-value records
    async def kv_get(self, namespace: str, key: str) -> dict[str, Any] | None:
        row = await self._one("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        return dict(json.loads(row["value"])) if row else None

    async def kv_put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO kv (namespace, key, value) VALUES (?,?,?)"
            " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, json.dumps(value, sort_keys=True, default=str)),
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self.db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    async def wake_leader(self) -> None:
        """Have the leader look at what this transaction handed over as soon as it commits. SQLite has one
        process, always the leader: nothing to do (PostgreSQL sends a NOTIFY)."""
        return None

    async def kv_items(self, namespace: str) -> dict[str, dict[str, Any]]:
        rows = await self._all("SELECT key, value FROM kv WHERE namespace = ?", (namespace,))
        return {r["key"]: dict(json.loads(r["value"])) for r in rows}

    # undos: one row per step with an undo, written when the step is planned
    async def save_undo(self, undo: UndoRecord) -> None:
        row = asdict(undo)
        for k in ("approved", "params", "output"):
            row[k] = None if row[k] is None else json.dumps(row[k], sort_keys=True, default=str)
        row["state"], row["idempotent"] = str(undo.state), int(undo.idempotent)
        await self._upsert("undos", row)

    async def undos_of(self, run_id: str) -> list[UndoRecord]:
        rows = await self._all("SELECT * FROM undos WHERE run_id = ? ORDER BY idx", (run_id,))
        return [_undo_from_row(r) for r in rows]

    async def undos_in_state(self, *states: UndoState) -> list[UndoRecord]:
        marks = ", ".join("?" * len(states))
        rows = await self._all(f"SELECT * FROM undos WHERE state IN ({marks})", tuple(str(s) for s in states))  # noqa: S608
        return [_undo_from_row(r) for r in rows]

    async def running_undos(self) -> int:
        """Undos executing now: they count against the blast-radius budget like mutating steps."""
        row = await self._one("SELECT COUNT(*) AS n FROM undos WHERE state = 'running'")
        return int(row["n"]) if row else 0

    async def runs_in_state(self, state: RunState) -> list[RunRecord]:
        rows = await self._all("SELECT * FROM runs WHERE state = ? ORDER BY created_at", (str(state),))
        return [_from_row(RunRecord, r) for r in rows]

    # Slack replay protection: signatures of accepted requests, kept while their timestamp is valid
    async def first_slack_delivery(self, signature: str, expires_at: float, now: float) -> bool:
        """Record a verified Slack request's signature; False if it was recorded already (a replay).
        Signatures whose window has passed are pruned first (the verifier refuses those requests)."""
        await self.db.execute("DELETE FROM slack_signatures WHERE expires_at < ?", (now,))
        rows = await self.db.execute_fetchall(
            "INSERT INTO slack_signatures (signature, expires_at) VALUES (?, ?)"
            " ON CONFLICT (signature) DO NOTHING RETURNING 1",
            (signature, expires_at),
        )
        return bool(list(rows))

    # routing in batches: one statement for many rows (daemon.engine.routing)
    async def unrouted_heads(self, limit: int) -> list[tuple[int, int]]:
        """(seq, alert count) of the oldest notifications not routed yet (payloads: ``inbox_payloads``)."""
        rows = await self._all(
            "SELECT seq, alerts FROM inbox WHERE routed_at IS NULL ORDER BY seq LIMIT ?", (limit,)
        )
        return [(int(r["seq"]), int(r["alerts"])) for r in rows]

    async def inbox_payloads(self, seqs: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for i in range(0, len(seqs), _MANY_ROWS):
            chunk = seqs[i : i + _MANY_ROWS]
            rows = await self._all(
                f"SELECT seq, payload FROM inbox WHERE seq IN ({', '.join('?' * len(chunk))})",  # noqa: S608
                tuple(chunk),
            )
            found.update((int(r["seq"]), str(r["payload"])) for r in rows)
        return found

    async def active_run_refs(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, bool]]:
        """``active_run_ref`` for many (runbook, target) keys at once; keys without an active run are absent.
        One query per runbook and 100 targets, on ``runs_by_target``."""
        states = tuple(s.value for s in RunState if s.active)
        found: dict[tuple[str, str], tuple[str, bool]] = {}
        by_runbook: dict[str, list[str]] = {}
        for runbook, target in sorted(keys):
            by_runbook.setdefault(runbook, []).append(target)
        for runbook, targets in by_runbook.items():
            for i in range(0, len(targets), _MANY_ROWS):
                chunk = targets[i : i + _MANY_ROWS]
                rows = await self._all(
                    "SELECT target, id, alert_resolved FROM runs WHERE runbook = ?"  # noqa: S608
                    f" AND target IN ({', '.join('?' * len(chunk))})"
                    f" AND state IN ({', '.join('?' * len(states))})",
                    (runbook, *chunk, *states),
                )
                for r in rows:
                    found[(runbook, str(r["target"]))] = (str(r["id"]), bool(r["alert_resolved"]))
        return found

    async def link_alerts(self, links: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """``link_alert`` for many (fingerprint, runbook, run_id), each once; the links that were new or
        resolved until now (a link already firing is left as it is: no page written)."""
        changed: set[tuple[str, str, str]] = set()
        for i in range(0, len(links), _MANY_ROWS):
            chunk = links[i : i + _MANY_ROWS]
            rows = await self.db.execute_fetchall(
                "INSERT INTO alert_links (fingerprint, runbook, run_id, resolved) VALUES "  # noqa: S608
                + ", ".join(["(?,?,?,0)"] * len(chunk))
                + " ON CONFLICT (fingerprint, runbook, run_id) DO UPDATE SET resolved = 0"
                " WHERE alert_links.resolved <> 0 RETURNING fingerprint, runbook, run_id",
                tuple(v for link in chunk for v in link),
            )
            changed.update((str(r[0]), str(r[1]), str(r[2])) for r in rows)
        return changed

    async def add_events(self, evs: list[EventRecord]) -> None:
        """``add_event`` for many whose details are plain JSON (routing's ``alert_attached``): written
        by ``kits.storedjson``, which writes NaN, datetimes or sets its own way (``add_event`` does not)."""
        if evs:
            await self.db.executemany(
                "INSERT INTO timeline (run_id, at, event, actor, detail) VALUES (?,?,?,?,?)",
                [(e.run_id, e.at, e.event, e.actor, storedjson.sorted_keys(e.detail)) for e in evs],
            )

    async def mark_routed_many(self, rows: list[tuple[int, float, dict[str, Any]]]) -> None:
        """``mark_routed`` for many (seq, at, result); a result is plain JSON (``kits.storedjson``)."""
        by_statement: dict[str, list[tuple[float, str, int]]] = {}
        for seq, at, result in rows:
            by_statement.setdefault(_mark_statement(result), []).append((at, storedjson.as_is(result), seq))
        for statement, these in by_statement.items():
            await self.db.executemany(statement, these)

    async def unrouted_after(self, seq: int, limit: int) -> list[int]:
        """Receipts of unrouted notifications after ``seq``, oldest first (the partial index only)."""
        rows = await self._all(
            "SELECT seq FROM inbox WHERE routed_at IS NULL AND seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [int(r["seq"]) for r in rows]

    async def inbox_payload(self, seq: int) -> str | None:
        row = await self._one("SELECT payload FROM inbox WHERE seq = ?", (seq,))
        return str(row["payload"]) if row else None

    async def runs_to_advance(self, after: str, limit: int) -> list[RunRecord]:
        """Active runs (not needing attention) with ids after ``after``, in id order, except those only
        waiting for a person (their current step awaits approval): what recovery advances."""
        rows = await self._all(
            "SELECT runs.* FROM runs LEFT JOIN steps ON steps.run_id = runs.id AND steps.idx = runs.current_step"
            " WHERE runs.state IN ('awaiting_approval', 'running', 'undoing') AND runs.id > ?"
            " AND NOT (runs.state = 'awaiting_approval' AND COALESCE(steps.state, '') = 'awaiting_approval')"
            " ORDER BY runs.id LIMIT ?",
            (after, limit),
        )
        return [_from_row(RunRecord, r) for r in rows]

    async def count_unrouted(self) -> int:
        row = await self._one("SELECT COUNT(*) AS n FROM inbox WHERE routed_at IS NULL")
        return int(row["n"]) if row else 0


def _undo_from_row(row: Row) -> UndoRecord:
    values: dict[str, Any] = {name: row[name] for name in _names(UndoRecord)}
    for k in ("approved", "params", "output"):
        if values[k] is not None:
            values[k] = json.loads(values[k])
    values["state"], values["idempotent"] = UndoState(values["state"]), bool(values["idempotent"])
    return UndoRecord(**values)


_QUEUE_ROWS = 2_000
"""``_WriteBehind`` sends its queue once it holds this many rows (a store copy queues whole tables)."""


class _WriteBehind:
    """The ``SqlDb`` of one SQLite transaction: a statement whose result nobody reads (INSERT, UPDATE,
    DELETE, SAVEPOINT, ...) is queued, and the queue is sent to aiosqlite's thread together with the next
    statement that returns rows, or with COMMIT: one hand-off instead of one per statement.

    A hand-off costs ~50 us of CPU on the two threads (the queue's wake-up, the result's
    ``call_soon_threadsafe``, the GIL moving back and forth); the statement itself ~1 us. Starting a run
    made 14 of them (bench/README.md, "Fewer hand-offs per transaction").

    The thread runs the queue in order, so a read sees every write before it. A queued statement's error
    (or a cancellation while the queue was on its way) is raised by the read or commit that sent it; from
    then on every read and the commit fail too and nothing more is sent (writes are dropped): whoever
    catches the error cannot go on writing as if the transaction were still whole, and ``transaction``
    rolls it back. A savepoint is the one way back: it sends the queue when it begins and before it ends
    (``Tx.savepoint``), so a statement made inside it fails inside it, and rolling back to it (which
    undoes everything sent since it began, and nothing was dropped before it) makes the transaction
    whole again."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._queued: list[tuple[str, Any, bool]] = []
        self._rows = 0
        self.sent = False
        """Something reached SQLite (BEGIN included): a rollback has something to undo."""
        self._failed: sqlite3.Error | None = None
        """Why the queue could not be sent whole: every later read and the commit raise it."""

    async def execute(self, sql: str, parameters: Any = (), /) -> None:
        if self._failed is None:
            self._queued.append((sql, storable(parameters), False))
            self._rows += 1
            if self._rows >= _QUEUE_ROWS:
                await self._send(None)

    async def executemany(self, sql: str, parameters: Any, /) -> None:
        if self._failed is None:
            rows = [storable(row) for row in parameters]
            self._queued.append((sql, rows, True))
            self._rows += len(rows)
            if self._rows >= _QUEUE_ROWS:
                await self._send(None)

    async def execute_fetchall(self, sql: str, parameters: Any = (), /) -> list[Row]:
        return await self._send((sql, storable(parameters)))

    async def flush(self) -> None:
        """Send what is queued now (raise its error here)."""
        if self._failed is not None:
            raise self._failed
        if self._queued:
            await self._send(None)

    async def rollback_to(self, savepoint: str) -> None:
        """Undo everything since ``savepoint`` began, and release it; the transaction is whole again."""
        self._queued, self._rows = [], 0  # made inside the savepoint: undone with it
        rollback = [(f"ROLLBACK TO {savepoint}", (), False), (f"RELEASE {savepoint}", (), False)]
        self.sent = True
        try:
            await _on_thread(self._db, _run_queued, rollback, None)
        except BaseException as exc:  # not whole again: the transaction fails as for a lost hand-off
            self._failed = _lost(exc)
            raise
        self._failed = None

    async def commit(self) -> None:
        await self.execute("COMMIT")
        await self._send(None)

    async def _send(self, read: tuple[str, Any] | None) -> list[Row]:
        if self._failed is not None:
            raise self._failed
        queued, self._queued, self._rows = self._queued, [], 0
        self.sent = True
        try:
            return await _on_thread(self._db, _run_queued, queued, read)
        except BaseException as exc:  # cancelled too: what of the queue ran is not known here
            self._failed = _lost(exc)
            raise


def _lost(exc: BaseException) -> sqlite3.Error:
    """What every later read and the commit of a transaction raise once a hand-off failed with ``exc``."""
    if isinstance(exc, sqlite3.Error):
        return exc
    return sqlite3.OperationalError(f"statements sent together did not all run ({type(exc).__name__}: {exc})")


def _run_queued(
    conn: sqlite3.Connection, queued: list[tuple[str, Any, bool]], read: tuple[str, Any] | None
) -> list[Row]:  # on aiosqlite's thread
    for sql, parameters, many in queued:
        if many:
            conn.executemany(sql, parameters)
        else:
            conn.execute(sql, parameters)
    return conn.execute(*read).fetchall() if read is not None else []


_T = TypeVar("_T")


async def _on_thread(db: aiosqlite.Connection, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(sqlite3_connection, *args)`` on aiosqlite's thread, in one hand-off. aiosqlite has no public
    call for this; its own ``execute`` and ``executemany`` are this same ``_execute`` over ``_conn``
    (aiosqlite 0.20-0.22; every store test goes through here, so a change there fails them all)."""
    conn: sqlite3.Connection = db._conn
    result: _T = await db._execute(fn, conn, *args)  # type: ignore[no-untyped-call]
    return result


class Store:
    """The SQLite backend of ``daemon.store.base.StateStore``: one process writes it (see ``lock``)."""

    shared = False
    backend = "sqlite"

    def __init__(self, db: aiosqlite.Connection, path: Path, busy_timeout: float = 5.0) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self.path = path
        self._intake = IntakeWriter(path, busy_timeout) if str(path) != ":memory:" else None

    @classmethod
    async def open(cls, path: Path, busy_timeout: float = 5.0) -> Store:
        try:
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(str(path), isolation_level=None)
            db.row_factory = sqlite3.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            await db.executescript(SCHEMA)
            await _migrate(db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open state store {path}: {exc}") from exc
        return cls(db, path, busy_timeout)

    async def close(self) -> None:
        if self._intake is not None:
            async with self._lock:
                await self._intake.close()
        await self._db.close()

    @asynccontextmanager
    async def transaction(self, fence: Fence | None = None) -> AsyncIterator[Tx]:
        """Serialised transaction; commits on success, rolls back on any error. Store failures (of BEGIN,
        of any statement, of COMMIT) raise StoreUnavailable (callers answer 503 and act on nothing).
        ``fence`` is verified right before COMMIT (SQLite has one writer: it always passes)."""
        async with self._lock:
            db = _WriteBehind(self._db)
            await db.execute("BEGIN IMMEDIATE")  # sent with the first read, or with COMMIT
            try:
                tx = Tx(db)
                yield tx
                if fence is not None:
                    await fence.verify(tx)
            except sqlite3.Error as exc:  # a statement failed (busy, disk full, I/O error, corrupt page, ...)
                await self._rollback(db)
                raise StoreUnavailable(f"state store error: {exc}") from exc
            except BaseException:
                await self._rollback(db)
                raise
            try:
                await db.commit()
            except sqlite3.Error as exc:
                await self._rollback(db)
                raise StoreUnavailable(f"state store could not commit: {exc}") from exc
            except BaseException:  # a value SQLite cannot take (sent with COMMIT), or a cancellation
                await self._rollback(db)
                raise

    async def _rollback(self, db: _WriteBehind) -> None:
        if db.sent:  # else BEGIN never reached SQLite: nothing to undo
            with suppress(sqlite3.Error):
                await self._db.execute("ROLLBACK")

    async def watch_inbox(self, wake: Callable[[str], None]) -> None:
        return None  # one process writes the file: its own inbox wakes its router

    async def append_inbox(self, rows: Sequence[InboxRow]) -> int:
        """Between the engine's transactions (one writer), in one hand-off to the intake's writer process."""
        if self._intake is None:  # ":memory:" is one connection's own database
            async with self.transaction() as tx:
                return await tx.append_inbox(rows)
        async with self._lock:
            return await self._intake.append(rows)

    async def ping(self) -> bool:
        try:
            async with self._db.execute("SELECT 1") as cur:
                await cur.fetchone()
        except (sqlite3.Error, ValueError):
            return False
        return True


async def _migrate(db: aiosqlite.Connection) -> None:
    """Apply the versioned migrations after the base schema (one process holds the file: no lock needed)."""
    await db.execute(migrations.VERSIONS_TABLE)
    done = {int(r[0]) for r in await db.execute_fetchall("SELECT version FROM schema_migrations")}
    for m in migrations.MIGRATIONS:
        if m.version in done or m.postgresql_only:
            continue
        record = f"INSERT INTO schema_migrations (version, name) VALUES ({m.version}, '{m.name}')"  # noqa: S608
        await db.executescript(f"BEGIN IMMEDIATE; {m.sql}; {record}; COMMIT;")


class StoreMemory:
    """The ActionMemory protocol over the store's kv table; each call is its own transaction."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        async with self._store.transaction() as tx:
            return await tx.kv_get(namespace, key)

    async def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        async with self._store.transaction() as tx:
            await tx.kv_put(namespace, key, value)

    async def delete(self, namespace: str, key: str) -> None:
        async with self._store.transaction() as tx:
            await tx.kv_delete(namespace, key)

    async def items(self, namespace: str) -> dict[str, dict[str, Any]]:
        async with self._store.transaction() as tx:
            return await tx.kv_items(namespace)
