"""Audit: the session PostgreSQL trusts every local connection, so no test used `state.password` for real.
Here one role must give its password (scram-sha-256): the secret reference's value is what logs in, and a
wrong one is a StoreUnavailable that does not repeat the password."""

from __future__ import annotations

import psycopg
import pytest
from pydantic import SecretStr
from support.postgres import LOOPBACK, PostgresServer

from daemon.config import StateConfig
from daemon.errors import StoreUnavailable
from daemon.store.factory import open_store, pg_settings

ROLE, PASSWORD = "rb_pw_audit", "pw-audit-Secret-1"


@pytest.fixture
def password_url(postgres_server: PostgresServer) -> str:
    hba = postgres_server.datadir / "pg_hba.conf"
    line = f"host all {ROLE} {LOOPBACK}/32 scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        hba.write_text(line + text)  # first match wins: only this role needs a password
    db = f"pw_{postgres_server.port}"
    with psycopg.connect(postgres_server.url(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_reload_conf()")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")  # type: ignore[arg-type]
            conn.execute(f'CREATE DATABASE "{db}" OWNER {ROLE} TEMPLATE template0')  # type: ignore[arg-type]
    return f"postgresql://{ROLE}@{LOOPBACK}:{postgres_server.port}/{db}"


async def test_the_password_from_the_secret_reference_logs_in(password_url: str) -> None:
    state = StateConfig(url=password_url, connect_timeout=5)
    store = await open_store(state, SecretStr(PASSWORD))
    try:
        assert await store.ping()
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable) as wrong:
        await open_store(state, SecretStr("not-" + PASSWORD))
    assert PASSWORD not in str(wrong.value)
    with pytest.raises(StoreUnavailable):
        await open_store(state, None)  # no password: refused, not let in


def test_tls_options_reach_the_driver() -> None:
    state = StateConfig(
        url="postgresql://rb@db.example:5432/rb", sslmode="verify-full", ca_file="/etc/ca.crt"
    )
    kw = pg_settings(state, SecretStr("pw")).connect_kwargs()
    assert (kw["sslmode"], kw["sslrootcert"], kw["password"]) == ("verify-full", "/etc/ca.crt", "pw")
