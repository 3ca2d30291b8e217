"""The prediction log records the revision of the traffic split that routed each request.

A rollout's stage counts only the requests its own split routed: a gateway adopts a new split only once the
versions it names are loaded, and that can take longer than the rollout's settle time (a candidate's adapter
loaded on a busy machine), so a window opened by the clock alone counted the champion's requests still routed
by the previous split, without their shadow copies — a false sample-ratio mismatch. Rows without a revision
(logged before this column, or by a gateway still running older code after an upgrade) keep NULL and count by
time alone, as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("split_revision", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("split_revision")
