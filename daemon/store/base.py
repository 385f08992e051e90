"""What the engine needs from a state store, whichever backend holds it (SQLite or PostgreSQL).

Both backends run the same SQL (``daemon.store.sqlite.Tx``): statements use ``?`` placeholders and the
portable forms (``INSERT ... ON CONFLICT``, ``RETURNING``); the PostgreSQL connection adapter translates the
placeholders. A new store method written once in ``Tx`` therefore works on both (docs/durability.md).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from daemon.store.sqlite import Tx

InboxRow: TypeAlias = tuple[float, int, str, float | None, str | None]
"""A notification for the inbox: (received_at, alert count, payload JSON, routed_at, result JSON). Routed
at intake (``routed_at`` and ``result`` set) when none of its alerts is anything routing acts on."""

Row: TypeAlias = Any
"""A result row: ``sqlite3.Row`` or the PostgreSQL adapter's row; both read as ``row["col"]`` and ``row[i]``."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(parameters: Iterable[Any], *, nul: bool = False) -> tuple[Any, ...]:
    """Statement parameters as a store can take them. A lone surrogate (JSON from a remote system may
    escape one, ``"\\ud800"``, and ``json.loads`` keeps it) cannot be encoded as UTF-8, and PostgreSQL
    text cannot hold NUL (``nul``): either would fail the statement on every try, so that, say, a step's
    result carrying a remote error message could never be recorded. Each becomes U+FFFD, as a decoder
    does with bytes it cannot read. The API refuses both at the door; this is for what came from
    elsewhere."""
    values = parameters if type(parameters) is tuple else tuple(parameters)
    for v in values:  # a plain loop: every statement's parameters pass here (any() over a generator
        # cost a tenth of routing's time)
        if isinstance(v, str) and ((not v.isascii() and _SURROGATE.search(v)) or (nul and "\x00" in v)):
            return tuple(_storable_text(v, nul) if isinstance(v, str) else v for v in values)
    return values


def _storable_text(text: str, nul: bool) -> str:
    text = _SURROGATE.sub("\ufffd", text)
    return text.replace("\x00", "\ufffd") if nul else text


class SqlDb(Protocol):
    """The statement-level calls ``Tx`` makes: SQLite's ``_WriteBehind`` and PostgreSQL's ``PgDb`` have them."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Awaitable[Any]: ...

    def execute_fetchall(self, sql: str, parameters: Any = ..., /) -> Awaitable[Iterable[Row]]: ...

    def executemany(self, sql: str, parameters: Iterable[Iterable[Any]], /) -> Awaitable[Any]: ...

    def flush(self) -> Awaitable[None]:
        """Send statements still queued (SQLite's write-behind; nothing to do where none are)."""
        ...

    def rollback_to(self, savepoint: str, /) -> Awaitable[None]:
        """``ROLLBACK TO`` and ``RELEASE`` the savepoint, now."""
        ...


class Fence(Protocol):
    """Checked inside a transaction right before it commits: raises LostLeadership when this replica may
    no longer write as the leader (another epoch is current, or its lease is no longer fresh)."""

    async def verify(self, tx: Tx) -> None: ...


class StateStore(Protocol):
    """The durable state store. Every transition is committed before it is acted on."""

    shared: bool
    """Other processes write to the same store (PostgreSQL): nothing may be cached across transactions."""
    backend: str
    """``sqlite`` or ``postgresql``."""

    def transaction(self, fence: Fence | None = None) -> AbstractAsyncContextManager[Tx]:
        """One serialised transaction; commits on success, rolls back on error. Store failures raise
        StoreUnavailable; with ``fence``, a replica that is no longer the leader gets LostLeadership."""
        ...

    async def append_inbox(self, rows: Sequence[InboxRow]) -> int:
        """Commit notifications to the inbox in one transaction (on disk when it returns), numbered after
        the last one stored by any replica: their receipts are ``first .. first + len(rows) - 1``; returns
        ``first``. Raises StoreUnavailable. PostgreSQL writes on a connection of its own, beside the
        engine's transactions; SQLite in one hand-off to a thread of its own, between them."""
        ...

    async def watch_inbox(self, wake: Callable[[str], None]) -> None:
        """Call ``wake("")`` whenever any process stores a notification and ``wake("handoff")`` when a
        follower hands work to the leader; runs until cancelled. SQLite has one process: returns at once."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
