"""The locations runners have served: what a monitor's ``locations`` may name.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from service_runtime.database import MYSQL_COLLATION, UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_locations",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("first_served_time", UtcDateTime(), nullable=False),
        sa.Column("last_served_time", UtcDateTime(), nullable=False),
        # Exact from the start (as 0006 made the others): "eu" and "EU" are two names.
        mysql_charset="utf8mb4",
        mysql_collate=MYSQL_COLLATION,
    )


def downgrade() -> None:
    op.drop_table("served_locations")
