"""Room on MySQL for what validation accepts: a website spec may hold a 64 KiB body and 50 headers of 8 KiB,
more than TEXT's 64 KiB.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

from service_runtime.database import use_large_text_columns

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    use_large_text_columns(bind, "monitors", ("spec", "locations", "labels"))
    use_large_text_columns(bind, "monitor_status", ("last_result", "location_results"))
    use_large_text_columns(bind, "secrets", ("sealed_value",))
    use_large_text_columns(bind, "key_values", ("value",))


def downgrade() -> None:
    """Nothing: narrowing could cut stored values."""
