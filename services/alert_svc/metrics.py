"""The alert service's Prometheus metrics (served with the RPC metrics on MONITORS_METRICS_LISTEN).

- ``monitors_alert_samples_evaluated_total``: samples the leader's engine evaluated rules against (its rate is
  the evaluation rate);
- ``monitors_alert_transitions_total{transition}``: alert lifecycle steps (pending, firing, acknowledged,
  resolved...);
- ``monitors_alert_notices_total{outcome}``: notices handed to NotificationService (sent, retrying, dropped);
- ``monitors_alert_reconcile_seconds``: one reconciliation pass (history read again and merged; a histogram);
- ``monitors_alert_leader``: 1 on the replica that evaluates (holds the lease), 0 on a standby;
- ``monitors_alert_rules`` and ``monitors_alert_open_alerts``: what the leader holds, read at scrape time
  (0 on a standby).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

SAMPLES_EVALUATED = Counter("monitors_alert_samples_evaluated", "Samples the alert engine evaluated rules against.")
TRANSITIONS = Counter("monitors_alert_transitions", "Alert lifecycle transitions.", ("transition",))
NOTICES = Counter("monitors_alert_notices", "Notices handed to the notification service, by outcome.", ("outcome",))
RECONCILE_SECONDS = Histogram(
    "monitors_alert_reconcile_seconds",
    "Seconds one reconciliation pass took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LEADER = Gauge("monitors_alert_leader", "1 while this replica evaluates the rules (holds the lease), else 0.")
RULES = Gauge("monitors_alert_rules", "Alert rules the leader's engine holds.")
OPEN_ALERTS = Gauge("monitors_alert_open_alerts", "Open (pending, firing or acknowledged) alerts the leader holds.")


def watch_engine(rules: Callable[[], int], open_alerts: Callable[[], int]) -> None:
    """Read the leader's holdings from these at each scrape (a term's engine calls it as it starts)."""
    LEADER.set(1)
    RULES.set_function(rules)
    OPEN_ALERTS.set_function(open_alerts)


def engine_gone() -> None:
    LEADER.set(0)
    RULES.set_function(lambda: 0)
    OPEN_ALERTS.set_function(lambda: 0)
