"""Key-value rows for the embedded mode's sessions and login counters (Redis holds them in production).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_values",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("expire_at", sa.Double(), nullable=True),
    )
    op.create_index("key_values_by_expiry", "key_values", ["expire_at"])


def downgrade() -> None:
    op.drop_table("key_values")
