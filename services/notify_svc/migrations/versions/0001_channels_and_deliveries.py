"""Channels (secrets sealed), the delivery queue, attempts, and idempotency keys.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from service_runtime.database import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_channels",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("sealed_secrets", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(500), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("template_title", sa.Text(), nullable=False),
        sa.Column("template_body", sa.Text(), nullable=False),
        sa.Column("auth_failures", sa.Integer(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
    )
    op.create_index("notify_channels_by_owner", "notify_channels", ["owner_id", "id"])
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("email_address", sa.String(254), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("sealed_notification", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", UtcDateTime(), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
    )
    # The worker's question: what is due now? And the owner's: my deliveries, newest first.
    op.create_index("notify_deliveries_due", "notify_deliveries", ["state", "next_attempt_time"])
    op.create_index("notify_deliveries_by_owner", "notify_deliveries", ["owner_id", "id"])
    op.create_index("notify_deliveries_by_channel", "notify_deliveries", ["channel_id", "id"])
    op.create_table(
        "notify_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("attempt_time", UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    op.create_index("notify_attempts_by_delivery", "notify_attempts", ["delivery_id", "id"])
    op.create_table(
        "notify_idempotency_keys",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("delivery_ids", sa.Text(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notify_idempotency_keys")
    op.drop_index("notify_attempts_by_delivery", "notify_attempts")
    op.drop_table("notify_attempts")
    op.drop_index("notify_deliveries_by_channel", "notify_deliveries")
    op.drop_index("notify_deliveries_by_owner", "notify_deliveries")
    op.drop_index("notify_deliveries_due", "notify_deliveries")
    op.drop_table("notify_deliveries")
    op.drop_index("notify_channels_by_owner", "notify_channels")
    op.drop_table("notify_channels")
