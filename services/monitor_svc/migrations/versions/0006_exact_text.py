"""Text compares exactly on MySQL: e-mail addresses, secret names, keys and ids as on SQLite.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from service_runtime.database import use_exact_text_comparison

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("users", "api_keys", "monitors", "monitor_status", "secrets", "key_values")


def upgrade() -> None:
    use_exact_text_comparison(op.get_bind(), TABLES)


def downgrade() -> None:
    """Nothing: comparing exactly is right for every earlier revision too."""
