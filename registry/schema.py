"""Tables of the registry store (SQLAlchemy Core). Alembic migrations create them; this is their shape.

JSON documents (lineage, eval reports, audit payloads) are stored as text that Python serialized, so
SQLite and PostgreSQL hold, and hash, the same bytes. Timestamps are timezone-aware.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

models = Table(
    "models", metadata,
    Column("name", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Bumped under a row lock by every version registration and alias move: the serialization point.
    Column("last_version", Integer, nullable=False, default=0),
)

versions = Table(
    "versions", metadata,
    Column("model", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("artifact_uri", Text, nullable=False),
    Column("prompt_format", String(128), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("lineage_json", Text),
    Column("files_json", Text, nullable=False, default="{}"),
    ForeignKeyConstraint(["model"], ["models.name"]),
)

evals = Table(
    "evals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("benchmark", String(128), nullable=False),
    Column("report_json", Text, nullable=False),
    ForeignKeyConstraint(["model", "number"], ["versions.model", "versions.number"]),
    UniqueConstraint("model", "number", "benchmark"),
)

status_history = Table(
    "status_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
)

# One row per (model, alias): the primary key itself makes two champions impossible.
aliases = Table(
    "aliases", metadata,
    Column("model", String(64), primary_key=True),
    Column("alias", String(32), primary_key=True),
    Column("number", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["model", "number"], ["versions.model", "versions.number"]),
)

alias_history = Table(
    "alias_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("alias", String(32), nullable=False),
    Column("number", Integer),
    Column("previous_number", Integer),
    Column("moved_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_alias_history_model_alias", "model", "alias", "id"),
)

audit_events = Table(
    "audit_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(128), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # The newest event of an action about a subject (has_event, last_event_at: the storm rule, a retirement's
    # closing event) without reading the whole log, which gains ~100 drift checks a day (migration 0008).
    Index("ix_audit_events_action_subject", "action", "subject", "seq"),
)

# The chain head, stored apart from the events so that deleting the newest events is detected.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

# -- prediction log (revision 0002) ------------------------------------------------------------------
# One row per answer; a shadowed request has two rows (served + shadow), hence unique (request_id, role).
# BIGINT ids on PostgreSQL (a busy log passes 2^31 rows); INTEGER on SQLite, where it is the rowid.
predictions = Table(
    "predictions", metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("model", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("user_hash", String(128), nullable=False),
    Column("prompt", Text),
    Column("prompt_sha256", String(64), nullable=False),
    Column("completion", Text),
    Column("completion_sha256", String(64)),
    Column("latency_ms", Float, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error", Text),
    Column("guardrail_flags", Text, nullable=False, default="[]"),  # JSON list; "[]" when none
    Column("served", Boolean, nullable=False),
    Column("split_revision", Integer),  # the routing split's revision (migration 0005); NULL before it
    Column("pinned", Boolean, nullable=False, server_default=false()),  # the caller named the version (0006)
    Column("shadow_shed", Boolean, nullable=False, server_default=false()),  # its shadow copy not sent (0007)
    UniqueConstraint("request_id", "role", name="uq_predictions_request_role"),
    Index("ix_predictions_model_ts", "model", "ts"),
    Index("ix_predictions_model_version_ts", "model", "version", "ts"),
)

# The latest feedback per request (a new one replaces it). No foreign key: request_id alone is not unique
# in predictions; the store checks that the request is logged.
feedback = Table(
    "feedback", metadata,
    Column("request_id", String(128), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("score", Float),
    Column("ts", DateTime(timezone=True), nullable=False),
)

# What every gateway replica serves (migration 0003): one row per model, revision bumped on each change.
traffic_splits = Table(
    "traffic_splits", metadata,
    Column("model", String(64), primary_key=True),
    Column("split_json", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["model"], ["models.name"]),
)

# The persisted state of each rollout (migration 0004): one row per (model, candidate), revision bumped on
# each save. At most one row per model in a non-terminal phase, enforced under the model lock.
rollouts = Table(
    "rollouts", metadata,
    Column("model", String(64), primary_key=True),
    Column("candidate", Integer, primary_key=True),
    Column("state_json", Text, nullable=False),
    Column("phase", String(32), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["model", "candidate"], ["versions.model", "versions.number"]),
    Index("ix_rollouts_model_phase", "model", "phase"),
)
