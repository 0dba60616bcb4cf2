"""The notification service's Prometheus metrics (served with the RPC metrics on MONITORS_METRICS_LISTEN).

- ``monitors_notify_attempts_total{kind, outcome, state}``: each delivery attempt by channel kind, what the
  provider answered (success, retryable, permanent) and what became of the delivery (delivered, retrying,
  failed);
- ``monitors_notify_attempt_seconds{kind}``: how long an attempt took (a histogram);
- ``monitors_notify_lane_queued``: deliveries this process has taken from the queue and not yet sent (they
  wait for their channel's pace).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter(
    "monitors_notify_attempts",
    "Delivery attempts by channel kind, the provider's answer and the delivery's state after it.",
    ("kind", "outcome", "state"),
)
ATTEMPT_SECONDS = Histogram(
    "monitors_notify_attempt_seconds",
    "Seconds one delivery attempt took.",
    ("kind",),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LANE_QUEUED = Gauge("monitors_notify_lane_queued", "Deliveries taken from the queue and waiting for their channel.")
