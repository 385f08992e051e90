"""``runbookd state migrate`` and ``runbookd state copy``: operator tools on the store itself.

``migrate`` applies the schema migrations of this version (``serve`` does it at start too, under the same
lock). ``copy`` moves an installation between stores, e.g. from the SQLite file to PostgreSQL; it holds the
SQLite file's single-writer lock, so it refuses while a ``serve`` uses that file.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr, ValidationError

from daemon.config import Config, StateConfig, load_config
from daemon.errors import ConfigError, StoreUnavailable
from daemon.store import migrations
from daemon.store.base import StateStore
from daemon.store.copying import copy_state
from daemon.store.factory import pg_settings
from daemon.store.lock import StateLock, StateLocked
from daemon.store.postgres import PgStore
from daemon.store.sqlite import Store


@dataclass(frozen=True)
class Location:
    """``sqlite:PATH`` or a ``postgresql://`` URL."""

    sqlite: Path | None = None
    url: str | None = None

    @classmethod
    def parse(cls, text: str, flag: str) -> Location:
        if text.startswith("sqlite:"):
            return cls(sqlite=Path(text.removeprefix("sqlite:")))
        if text.startswith(("postgresql://", "postgres://")):
            try:
                StateConfig(url=text)  # the same checks as state.url (no password in it)
            except ValidationError as exc:
                raise ConfigError(f"{flag}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
            return cls(url=text)
        raise ConfigError(f"{flag}: expected sqlite:PATH or postgresql://USER@HOST:PORT/DB, got {text!r}")

    def same_store(self, other: Location) -> bool:
        if self.sqlite is not None and other.sqlite is not None:
            return self.sqlite.resolve() == other.sqlite.resolve()
        return self.url is not None and self.url.replace("postgres://", "postgresql://", 1) == (
            (other.url or "").replace("postgres://", "postgresql://", 1)
        )


def _config(path: Path | None) -> tuple[Config | None, SecretStr | None]:
    if path is None:
        return None, None
    config = load_config(path)
    if config.state.password is None:
        return config, None
    try:  # only the store's own secret: these tools need no other
        return config, config.state.password.resolve()
    except ValueError as exc:
        raise ConfigError(f"state.password: {exc}") from None


async def _open(loc: Location, config: Config | None, password: SecretStr | None) -> StateStore:
    if loc.sqlite is not None:
        return await Store.open(loc.sqlite)
    base = config.state if config is not None and config.state.url else StateConfig()
    state = base.model_copy(update={"url": loc.url})
    return await PgStore.open(pg_settings(state, password if base.url else None))


def migrate(config_path: Path) -> int:
    config, password = _config(config_path)
    assert config is not None
    loc = Location(url=config.state.url) if config.state.url else Location(sqlite=config.state.path)

    async def run() -> None:
        store = await _open(loc, config, password)
        await store.close()

    try:
        lock = StateLock.acquire(loc.sqlite) if loc.sqlite is not None else None
    except StateLocked as exc:
        print(f"runbookd: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"runbookd: {exc}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()
    where = "PostgreSQL" if loc.url else str(loc.sqlite)
    print(f"state store {where} is at schema version {migrations.LATEST}")
    return 0


def copy(source: str, target: str, *, force: bool, config_path: Path | None) -> int:
    src, dst = Location.parse(source, "--from"), Location.parse(target, "--to")
    if src.same_store(dst):  # with --force the copy would empty the store it reads from
        print("runbookd: --from and --to name the same store", file=sys.stderr)
        return 2
    config, password = _config(config_path)
    locks = []
    try:
        for loc in (src, dst):
            if loc.sqlite is not None:
                locks.append(StateLock.acquire(loc.sqlite))
    except StateLocked as exc:
        print(f"runbookd: {exc}", file=sys.stderr)
        return 2

    async def run() -> dict[str, int]:
        a = await _open(src, config, password)
        try:
            b = await _open(dst, config, password)
            try:
                return (await copy_state(a, b, force=force)).rows
            finally:
                await b.close()
        finally:
            await a.close()

    try:
        rows = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"runbookd: {exc}", file=sys.stderr)
        return 1
    finally:
        for lock in locks:
            lock.release()
    print("copied " + ", ".join(f"{table}: {n}" for table, n in sorted(rows.items())))
    return 0
