"""Schema migrations with Alembic, run programmatically when a store opens (idempotent)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, text

from registry.db import is_postgres

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
    with engine.connect() as conn:
        if is_postgres(engine):
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
        finally:
            if is_postgres(engine):
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
