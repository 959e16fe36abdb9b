"""idempotency records: forget kept answers that carry credentials; index for the purge

Answers carrying a new API key or an access token were kept in plain text; they are no longer
kept (see billfold/kit/idempotency.py), and the ones already there are deleted: their work is
done, so a retry of one now simply does the work again (a log-in) or is refused by its own
rules (a taken e-mail).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 19:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM idempotency_keys WHERE response_body LIKE '%bf\\_sk\\_%' ESCAPE '\\' "
        "OR response_body LIKE '%\"access\\_token\"%' ESCAPE '\\'"
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
