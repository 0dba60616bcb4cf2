"""Room on MySQL for what validation accepts: a webhook's 20 headers of 4 KiB, sealed, pass TEXT's 64 KiB.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from service_runtime.database import use_large_text_columns

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    use_large_text_columns(bind, "notify_channels", ("config", "sealed_secrets", "template_title", "template_body"))
    use_large_text_columns(bind, "notify_deliveries", ("sealed_notification",))
    use_large_text_columns(bind, "notify_idempotency_keys", ("delivery_ids",))


def downgrade() -> None:
    """Nothing: narrowing could cut stored values."""
