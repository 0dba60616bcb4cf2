"""Text compares exactly on MySQL: idempotency keys, ids and addresses as on SQLite.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from service_runtime.database import use_exact_text_comparison

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("notify_channels", "notify_deliveries", "notify_attempts", "notify_idempotency_keys")


def upgrade() -> None:
    use_exact_text_comparison(op.get_bind(), TABLES)


def downgrade() -> None:
    """Nothing: comparing exactly is right for every earlier revision too."""
