"""Open the store the configuration names: PostgreSQL when ``state.url`` is set, else the SQLite file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from daemon.config import StateConfig
from daemon.store.base import StateStore
from daemon.store.leadership import Leadership, SoleLeader
from daemon.store.sqlite import Store

if TYPE_CHECKING:
    from daemon.store.postgres import PgSettings

# The PostgreSQL modules (and psycopg, ~90 ms and ~9 MB) are imported only when the configuration names
# PostgreSQL: a SQLite deployment, the default, never loads them.


def pg_settings(state: StateConfig, password: SecretStr | None, *, lease: float = 15.0) -> PgSettings:
    from daemon.store.postgres import PgSettings

    assert state.url is not None
    return PgSettings(
        url=state.url,
        password=password.get_secret_value() if password is not None else None,
        sslmode=state.sslmode,
        sslrootcert=str(state.ca_file) if state.ca_file else None,
        connect_timeout=state.connect_timeout,
        busy_timeout=state.busy_timeout,
        idle_in_transaction=lease,
    )


def leadership_for(
    store: StateStore, state: StateConfig, password: SecretStr | None, *, lease: float, renew: float
) -> Leadership:
    """SQLite: this process always leads (it holds the state lock). PostgreSQL: a lease in the database."""
    if store.backend == "postgresql":
        from daemon.store.lease import LeaseLeadership

        return LeaseLeadership(pg_settings(state, password, lease=lease), lease=lease, renew=renew)
    return SoleLeader()


async def open_store(state: StateConfig, password: SecretStr | None, *, lease: float = 15.0) -> StateStore:
    """Open (and migrate) the configured store. Raises StoreUnavailable."""
    if state.url:
        from daemon.store.postgres import PgStore

        return await PgStore.open(pg_settings(state, password, lease=lease))
    return await Store.open(state.path, state.busy_timeout)
