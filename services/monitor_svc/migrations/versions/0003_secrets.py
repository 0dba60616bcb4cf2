"""Users' named secrets, sealed with AES-GCM.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from service_runtime.database import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sealed_value", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("secrets")
