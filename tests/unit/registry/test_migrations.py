"""The migrations build the schema the code declares (``registry.schema``), on SQLite and PostgreSQL, and an
upgrade keeps what an older store logged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert

from registry import schema
from registry.db import make_engine
from registry.migrate import upgrade
from registry.predictions import PredictionStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def differences(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, schema.metadata)


def test_the_migrations_build_the_declared_schema(engine):
    upgrade(engine, "0004")
    # The comparison sees missing columns and indexes (so an empty list below means something): 0005 to 0008 add
    # these.
    found = sorted((d[0], d[2], d[3].name) if d[0] == "add_column" else (d[0], d[1].table.name, d[1].name)
                   for d in differences(engine))
    assert found == [("add_column", "predictions", "pinned"), ("add_column", "predictions", "shadow_shed"),
                     ("add_column", "predictions", "split_revision"),
                     ("add_index", "audit_events", "ix_audit_events_action_subject")]
    upgrade(engine)
    assert differences(engine) == []


def test_an_upgrade_keeps_the_rows_an_older_store_logged(engine):
    """0004 -> head: a prediction logged before the split revision, the pinned mark and the shed mark existed is
    still there, without a revision, as routed (not pinned) and mirrored (not shed), and a rollout's stage counts it
    by time alone."""
    upgrade(engine, "0004")
    with engine.begin() as conn:
        # Through the table as the code declares it, naming only 0004's columns: the values are written as the
        # older code wrote them (SQLite keeps datetimes as text in SQLAlchemy's format).
        conn.execute(insert(schema.predictions).values(
            ts=T0, request_id="old-1", model="m", version=1, role="champion", user_hash="u", prompt="p",
            prompt_sha256="0" * 64, completion="c", latency_ms=12.5, prompt_tokens=3, completion_tokens=2,
            outcome="ok", guardrail_flags="[]", served=True))
    upgrade(engine)
    log = PredictionStore(engine)
    window = (T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    [row] = log.window("m", *window)
    assert (row.request_id, row.latency_ms, row.split_revision, row.pinned, row.shadow_shed) == (
        "old-1", 12.5, None, False, False)
    [counted] = log.aggregates("m", *window, min_split_revision=3, routed_only=True, mirrored_only=True)
    assert (counted.version, counted.requests, counted.ok) == (1, 1, 1)
    assert log.stale_requests("m", *window, min_split_revision=3) == 0


def test_the_prediction_log_gains_its_columns_in_place_on_sqlite(tmp_path):
    """A busy log is millions of rows: adding a column must not copy the table (batch mode's recreate holds
    SQLite's write lock for as long as the copy takes)."""
    from sqlalchemy import event

    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    upgrade(engine, "0004")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    upgrade(engine)
    engine.dispose()
    assert not [sql for sql in statements if "_alembic_tmp" in sql]
    added = [sql for sql in statements if sql.startswith("ALTER TABLE predictions ADD COLUMN")]
    assert [sql.split()[5] for sql in added] == ["split_revision", "pinned", "shadow_shed"]
