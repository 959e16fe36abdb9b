"""catalog as code: each plan's Stripe product, and its Stripe prices per currency

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("stripe_product_id", sa.String(length=255), nullable=True))
    op.create_table(
        "plan_prices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("interval", sa.String(length=10), nullable=False),
        sa.Column("stripe_price_id", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_price_id"),
    )
    op.create_index("ix_plan_prices_plan_id", "plan_prices", ["plan_id"])


def downgrade() -> None:
    op.drop_index("ix_plan_prices_plan_id", table_name="plan_prices")
    op.drop_table("plan_prices")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("stripe_product_id")
