"""scheduled_plan_changes: a plan change waiting for the period end (a Stripe schedule)

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30 02:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "scheduled_plan_changes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("from_plan_id", sa.String(length=40), nullable=False),
        sa.Column("to_plan_id", sa.String(length=40), nullable=False),
        sa.Column("stripe_schedule_id", sa.String(length=255), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule_released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"]),
        sa.ForeignKeyConstraint(["from_plan_id"], ["plans.id"]),
        sa.ForeignKeyConstraint(["to_plan_id"], ["plans.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_schedule_id"),
    )
    op.create_index(
        "ix_scheduled_plan_changes_subscription_id",
        "scheduled_plan_changes",
        ["subscription_id"],
    )
    op.create_index(
        "uq_scheduled_plan_changes_one_pending",
        "scheduled_plan_changes",
        ["subscription_id"],
        unique=True,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("uq_scheduled_plan_changes_one_pending", table_name="scheduled_plan_changes")
    op.drop_index("ix_scheduled_plan_changes_subscription_id", table_name="scheduled_plan_changes")
    op.drop_table("scheduled_plan_changes")
