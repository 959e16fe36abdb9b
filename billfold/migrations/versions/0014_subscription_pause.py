"""subscriptions: paused collection (behavior, resumes at)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("pause_behavior", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("pause_resumes_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("pause_resumes_at")
        batch.drop_column("pause_behavior")
