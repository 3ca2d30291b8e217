"""Prediction log: one row per answer (served or shadow) and the latest feedback per request.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
# BIGINT on PostgreSQL (a busy log passes 2^31 rows); INTEGER on SQLite, where it is the rowid.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("ts", TZ, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("user_hash", sa.String(128), nullable=False),
        sa.Column("prompt", sa.Text),
        sa.Column("prompt_sha256", sa.String(64), nullable=False),
        sa.Column("completion", sa.Text),
        sa.Column("completion_sha256", sa.String(64)),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("guardrail_flags", sa.Text, nullable=False),
        sa.Column("served", sa.Boolean, nullable=False),
        sa.UniqueConstraint("request_id", "role", name="uq_predictions_request_role"),
    )
    op.create_index("ix_predictions_model_ts", "predictions", ["model", "ts"])
    op.create_index("ix_predictions_model_version_ts", "predictions", ["model", "version", "ts"])
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("ts", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_predictions_model_version_ts", table_name="predictions")
    op.drop_index("ix_predictions_model_ts", table_name="predictions")
    op.drop_table("predictions")
