"""customers: phone and free-form metadata, mirrored to the Stripe customer

`metadata` is the user's own; `stripe_metadata_keys` the user keys that may be on the Stripe
customer (so a key removed here is removed there); `link_phone`/`link_metadata` complete the
creation request a retry repeats unchanged.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("phone", sa.String(length=20), nullable=True))
        batch.add_column(
            sa.Column("metadata", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column(
                "stripe_metadata_keys", sa.JSON(), nullable=False, server_default=sa.text("'[]'")
            )
        )
        batch.add_column(sa.Column("link_phone", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("link_metadata", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("link_metadata")
        batch.drop_column("link_phone")
        batch.drop_column("stripe_metadata_keys")
        batch.drop_column("metadata")
        batch.drop_column("phone")
