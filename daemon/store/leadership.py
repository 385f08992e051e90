"""Which replica leads: the one that routes, plans, executes, fires schedules, expires approvals and
notifies. Every replica serves the webhook (store only), the API, Slack and /metrics.

SQLite has one writer (the state lock): ``SoleLeader`` always leads. On PostgreSQL, ``LeaseLeadership``
(in ``daemon.store.lease``, so that psycopg is imported only where PostgreSQL is configured) holds a
lease row: its expiry is judged on the database's clock (``clock_timestamp()``), never by comparing the
replicas' clocks, and its **epoch** grows at each takeover. The leader's engine transactions are fenced:
right before COMMIT, ``verify`` checks (``FOR SHARE``, so a takeover waits for the commit) that its epoch
is still current and its lease unexpired; otherwise the transaction rolls back with LostLeadership. A
leader also stops by its own monotonic clock: once ``lease - renew`` seconds passed since the start of
its last successful renewal, it no longer counts itself fresh, whatever the database says.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Protocol

from daemon.store.sqlite import Tx


class Leadership(Protocol):
    holder: str
    """This replica's name in the lease: host:pid:random."""

    @property
    def leading(self) -> bool: ...

    @property
    def epoch(self) -> int | None: ...

    def fresh(self) -> bool:
        """Leading, and recently enough renewed (monotonic clock) to start a step."""
        ...

    def on_change(self, callback: Callable[[bool], None]) -> None: ...

    async def verify(self, tx: Tx) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SoleLeader:
    """SQLite: the one process that holds the state lock leads, always."""

    def __init__(self) -> None:
        self.holder = replica_name()

    @property
    def leading(self) -> bool:
        return True

    @property
    def epoch(self) -> int | None:
        return 0

    def fresh(self) -> bool:
        return True

    def on_change(self, callback: Callable[[bool], None]) -> None:
        callback(True)

    async def verify(self, tx: Tx) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
