"""operator console: when cards were attached, and indexes for time-window queries

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column) pairs the dashboard and the admin lists filter by time.
_TIME_INDEXES = [
    ("payments", "created_at"),
    ("refunds", "created_at"),
    ("stripe_events", "received_at"),
    ("credit_transactions", "created_at"),
    ("audit_log", "created_at"),
    ("customers", "created_at"),
    ("payment_methods", "attached_at"),
]


def upgrade() -> None:
    with op.batch_alter_table("payment_methods") as batch:
        batch.add_column(sa.Column("attached_at", sa.DateTime(timezone=True), nullable=True))
    for table, column in _TIME_INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in reversed(_TIME_INDEXES):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
    with op.batch_alter_table("payment_methods") as batch:
        batch.drop_column("attached_at")
