"""An index on the audit log by (action, subject, seq).

The drift monitor's storm rule asks for the newest trigger and the newest retrain outcome of a model at every run,
and retention asks which versions have their closing retirement event: without the index each question read the
whole log, which gains about a hundred drift checks a day.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_action_subject", "audit_events", ["action", "subject", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_action_subject", table_name="audit_events")
