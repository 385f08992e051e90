"""A real PostgreSQL server for the tests (Debian's ``postgresql`` package), one per test session.

``initdb`` refuses to run as root, so the cluster is made and started as the ``postgres`` user in a
temporary folder it owns (``runuser`` when the tests run as root), listening on a free port on 127.0.0.1
with trust authentication; ``pg_ctl stop`` at the end. Each test gets a database of its own
(``fresh_database``), so no test sees another's rows.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from .ports import LOOPBACK, free_port


def pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin (not on PATH on Debian)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        """``durable``: fsync on, as in production (benchmarks); off for tests (nothing to lose there)."""
        self.bindir = bindir
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="runbookd-pg-"))
        self.datadir = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def _run(self, *argv: str) -> None:
        cmd = [str(a) for a in argv]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")

    def start(self) -> PostgresServer:
        self._run(
            self.bindir / "initdb",
            "-D",
            self.datadir,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        opts = f"-p {self.port} -k {self.root} -c listen_addresses={LOOPBACK} -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c shared_buffers=32MB"
        self._run(
            self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.log, "-o", opts, "-w", "-t", "60", "start"
        )
        return self

    def stop(self) -> None:
        try:
            self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def fresh_database(self, prefix: str = "t") -> str:
        """Create an empty database; its postgresql:// URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')  # type: ignore[arg-type]
        return self.url(name)
