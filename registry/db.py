"""Engines for the registry store: SQLite (default) or PostgreSQL, same code.

SQLite is shared by the CLI, flows and gateway as separate processes, so it runs in WAL mode with a busy
timeout, and every write transaction (:func:`write_tx`) starts with ``BEGIN IMMEDIATE``: the write lock is
taken up front, so two writers queue instead of failing with "database is locked" when they upgrade a read
lock. Reads (``engine.connect()``) use a plain deferred ``BEGIN``.
PostgreSQL uses row locks (``SELECT ... FOR UPDATE``) at the serialization points instead.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE = "slm_write"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise ValueError(f"unsupported registry database {parsed.get_backend_name()!r} in SLM_DATABASE_URL; "
                     "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _journal_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front; readers use a deferred BEGIN, which in WAL mode never
        # blocks (nor waits for) the writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")

    return engine


def _journal_wal(cur) -> None:
    """Put the file in WAL mode (it stays so: later connections find it done). Several processes opening one fresh
    file at once (a gateway and a worker starting together) race for the switch, and the losers get "database is
    locked" at once — the busy timeout does not cover it — so the switch is retried until the busy timeout ends."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def write_tx(engine: Engine):
    """A write transaction: ``with write_tx(engine) as conn: ...`` (commits on success)."""
    return engine.execution_options(**{WRITE: True}).begin()


def from_db(value: datetime) -> datetime:
    """A timestamp as read back, in UTC: SQLite returns naive datetimes (stored as UTC); PostgreSQL returns aware
    ones in the session's time zone (the server's ``TimeZone``, e.g. Europe/Berlin), which must be converted, not
    relabelled."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
