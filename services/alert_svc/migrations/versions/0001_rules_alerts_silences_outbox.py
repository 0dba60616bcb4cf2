"""Alert rules, alerts and their transitions, silences, the notification outbox, and one row per owner
(the lock behind the rule quota, and the marker that the default rule was made).

Text compares exactly on MySQL and long text is MEDIUMTEXT, as in the other services' histories.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from service_runtime.database import UtcDateTime, use_exact_text_comparison, use_large_text_columns

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 100  # width of id columns


def upgrade() -> None:
    op.create_table(
        "alert_owners",
        sa.Column("owner_id", sa.String(ID), primary_key=True),
        sa.Column("default_rule_time", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("owner_id", sa.String(ID), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("monitor_id", sa.String(ID), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("for_duration_s", sa.Double(), nullable=False),
        sa.Column("keep_firing_for_s", sa.Double(), nullable=False),
        sa.Column("repeat_interval_s", sa.Double(), nullable=True),
        sa.Column("cooldown_s", sa.Double(), nullable=False),
        sa.Column("escalate_after_s", sa.Double(), nullable=True),
        sa.Column("channel_ids", sa.Text(), nullable=False),
        sa.Column("escalation_channel_ids", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
    )
    # The owner's pages (and quota count), and the rules bound to one monitor (listing, monitor deleted).
    op.create_index("alert_rules_by_owner", "alert_rules", ["owner_id", "id"])
    op.create_index("alert_rules_by_monitor", "alert_rules", ["owner_id", "monitor_id", "id"])
    op.create_table(
        "alert_alerts",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("owner_id", sa.String(ID), nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("monitor_id", sa.String(ID), nullable=False),
        sa.Column("open_key", sa.String(2 * ID + 1), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("rule_name", sa.Text(), nullable=False),
        sa.Column("monitor_name", sa.Text(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("fire_time", UtcDateTime(), nullable=True),
        sa.Column("acknowledge_time", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=False),
        sa.Column("resolve_time", UtcDateTime(), nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("escalate_time", UtcDateTime(), nullable=True),
        sa.Column("last_met_time", UtcDateTime(), nullable=True),
        sa.Column("notify_time", UtcDateTime(), nullable=True),
        sa.Column("notify_sequence", sa.Integer(), nullable=False),
    )
    # One open alert per rule and monitor (NULL once resolved; NULLs do not collide on either backend).
    op.create_index("alert_alerts_open", "alert_alerts", ["open_key"], unique=True)
    op.create_index("alert_alerts_by_owner", "alert_alerts", ["owner_id", "id"])
    op.create_index("alert_alerts_by_rule", "alert_alerts", ["rule_id", "monitor_id", "resolve_time"])
    op.create_index("alert_alerts_by_monitor", "alert_alerts", ["monitor_id", "id"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(ID), nullable=False),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
    )
    op.create_index("alert_events_by_alert", "alert_events", ["alert_id", "id"])
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("owner_id", sa.String(ID), nullable=False),
        sa.Column("monitor_id", sa.String(ID), nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("cron_schedule", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
    )
    op.create_index("alert_silences_by_owner", "alert_silences", ["owner_id", "id"])
    op.create_index("alert_silences_by_end", "alert_silences", ["end_time"])
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("owner_id", sa.String(ID), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("channel_ids", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("alert_id", sa.String(ID), nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("monitor_id", sa.String(ID), nullable=False),
        sa.Column("monitor_name", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("event_time", UtcDateTime(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", UtcDateTime(), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
    )
    # The outbox worker's question: what is due now, oldest first?
    op.create_index("alert_outbox_due", "alert_outbox", ["next_attempt_time", "id"])

    bind = op.get_bind()
    use_exact_text_comparison(bind, TABLES)
    for table, columns in LONG_TEXT.items():
        use_large_text_columns(bind, table, columns)


TABLES = ("alert_owners", "alert_rules", "alert_alerts", "alert_events", "alert_silences", "alert_outbox")
LONG_TEXT = {
    "alert_rules": (
        "display_name",
        "selector",
        "condition",
        "channel_ids",
        "escalation_channel_ids",
        "description",
        "labels",
    ),
    "alert_alerts": (
        "summary",
        "explanation",
        "rule_name",
        "monitor_name",
        "acknowledged_by",
        "resolved_by",
        "comment",
    ),
    "alert_events": ("explanation", "actor"),
    "alert_silences": ("selector", "comment", "cron_schedule"),
    "alert_outbox": ("channel_ids", "monitor_name", "summary"),
}


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
