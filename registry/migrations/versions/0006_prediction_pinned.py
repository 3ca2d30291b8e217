"""The prediction log marks the requests whose caller named the version (``model: MODEL:vN``).

The traffic split did not choose those versions, so a rollout's stage must not count them in its arms: a team
testing the challenger by name would otherwise stand for its users (their errors or their feedback judged the
candidate, and their volume shifted the split's sample ratio). Rows logged before this column are taken as
routed (false), as they were counted before it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recreate="never": SQLite can add this column in place (ALTER TABLE ... ADD COLUMN ... DEFAULT 0 NOT NULL);
    # left to itself, batch mode copies the whole table for a column with a SQL-expression default, holding the
    # write lock for about a minute on a log of ten million rows.
    with op.batch_alter_table("predictions", recreate="never") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("pinned")
