"""invoices: amounts as 64-bit integers, like every other money column

An invoice's amounts in minor units can pass 2^31 (21.5 million rupiah is about $1,300): on
PostgreSQL a 32-bit column refused them, and the `invoice.*` event carrying one failed.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30 00:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNTS = ("total", "amount_due", "amount_paid", "discount_amount")


def upgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        for column in AMOUNTS:
            batch.alter_column(
                column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
            )


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        for column in AMOUNTS:
            batch.alter_column(
                column, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
            )
