"""Schema migrations with Alembic, run programmatically when a store opens (idempotent).

Several processes may open one store at once (a gateway and a worker starting together on a fresh home, or after
an upgrade brings a new migration), so the check and the upgrade are serialized between processes: on PostgreSQL
by an advisory lock; on SQLite by running both in one write transaction taken up front (``BEGIN IMMEDIATE``,
:func:`registry.db.write_tx`). A deferred ``BEGIN`` would not do: in WAL mode a read transaction that then needs to
write fails at once with "database is locked" (the busy timeout does not cover that upgrade), while a second
``BEGIN IMMEDIATE`` waits for the first (busy timeout), then finds the schema at head and does nothing. A store
already at head is recognized by a plain read first, so opening one never queues behind a writer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, text

from registry.db import is_postgres, write_tx

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: serializes first-open migrations of several processes on one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x534C4D
# Alembic's command API swaps module globals (its `context` and `op` proxies) in and out, so two threads
# migrating at once break each other (KeyError: 'script' / 'config', seen when a gateway thread and a flow
# opened the registry together). So: one migration at a time per process.
_THREAD_LOCK = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _THREAD_LOCK:
        _upgrade(engine, revision)


def _upgrade(engine: Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if not is_postgres(engine):
        if revision == "head" and _at_head(engine, config):
            return
        # One write transaction for the check and the upgrade: Alembic sees a transaction already begun and runs
        # every migration inside it; it commits when the block ends.
        with write_tx(engine) as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        conn.commit()
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()


def _at_head(engine: Engine, config) -> bool:
    """Whether the store's schema is at the newest revision (a read: it waits for no writer)."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == set(ScriptDirectory.from_config(config).get_heads())
