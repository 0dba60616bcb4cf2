"""The latest result from each location of a multi-location monitor (for quorum).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("monitor_status", sa.Column("location_results", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("monitor_status", "location_results")
