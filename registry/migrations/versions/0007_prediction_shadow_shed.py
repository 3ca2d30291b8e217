"""The prediction log marks the served requests whose shadow copy the gateway did not send.

A gateway caps the shadow copies it has in flight (serve.yaml ``shadow_max_in_flight``): a shadow version slower
than the traffic it mirrors would otherwise take the threads, connections and batch rows the served requests need.
A copy over the cap is shed, and its request is marked, so a rollout's shadow stage compares its two arms on the
requests that have a copy: counted, the shed ones would read as copies gone missing (a sample-ratio mismatch, a
rollback of a candidate for the gateway's load). Rows logged before this column had their copy sent (false).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recreate="never": added in place on SQLite, as in 0006 (batch mode would copy the whole log).
    with op.batch_alter_table("predictions", recreate="never") as batch:
        batch.add_column(sa.Column("shadow_shed", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("shadow_shed")
