"""Persisted rollout state: resume after a crash, one rollout per model at a time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("candidate", sa.Integer, primary_key=True),
        sa.Column("state_json", sa.Text, nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model", "candidate"], ["versions.model", "versions.number"]),
    )
    op.create_index("ix_rollouts_model_phase", "rollouts", ["model", "phase"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_model_phase", table_name="rollouts")
    op.drop_table("rollouts")
