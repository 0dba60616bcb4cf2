"""Where a monitor's checks run: on its locations' shared runners, or on a dedicated runner of its own.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("monitors", sa.Column("placement", sa.String(16), nullable=False, server_default="shared"))


def downgrade() -> None:
    op.drop_column("monitors", "placement")
