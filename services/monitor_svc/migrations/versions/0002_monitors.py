"""Monitors and their current status.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from service_runtime.database import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitors",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("locations", sa.Text(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("heartbeat_token", sa.String(64), nullable=False, unique=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
    )
    op.create_index("monitors_by_owner", "monitors", ["owner_id", "id"])
    op.create_table(
        "monitor_status",
        sa.Column("monitor_id", sa.String(32), sa.ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_check_time", UtcDateTime(), nullable=True),
        sa.Column("last_result", sa.Text(), nullable=True),
        sa.Column("runner_id", sa.String(100), nullable=False),
        sa.Column("location", sa.String(32), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("state_change_time", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_status")
    op.drop_index("monitors_by_owner", "monitors")
    op.drop_table("monitors")
