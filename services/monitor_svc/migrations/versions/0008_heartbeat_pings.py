"""The latest pings of each heartbeat monitor (kind, exit status, run time, body), for the user to read.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from service_runtime.database import MYSQL_COLLATION, UtcDateTime, use_large_text_columns

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heartbeat_pings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("monitor_id", sa.String(32), sa.ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.Column("run_time_s", sa.Float(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_truncated", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("remote_address", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(200), nullable=False),
        # Made exact from the start (as 0006 made the others): the foreign key needs monitors.id's collation.
        mysql_charset="utf8mb4",
        mysql_collate=MYSQL_COLLATION,
    )
    op.create_index("heartbeat_pings_by_monitor", "heartbeat_pings", ["monitor_id", "id"])
    use_large_text_columns(op.get_bind(), "heartbeat_pings", ("body",))


def downgrade() -> None:
    op.drop_table("heartbeat_pings")
