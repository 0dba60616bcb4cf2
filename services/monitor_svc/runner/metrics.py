"""A runner's Prometheus metrics (served on MONITORS_METRICS_LISTEN when set, as the services' are).

- ``monitors_runner_checks_total`` and ``monitors_runner_checks_down_total``: checks finished, and those DOWN;
- ``monitors_runner_schedule_lag_seconds``: how late each check started after it was due (a histogram);
- ``monitors_runner_monitors``, ``monitors_runner_checks_running``: assigned monitors, checks under way;
- ``monitors_runner_results_queued``: results waiting to be reported (the queue's depth);
- ``monitors_runner_results_total{outcome}``: results the monitor service accepted or rejected, and those
  dropped here (a full queue while it could not take them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the scheduler imports SCHEDULE_LAG from here
    from services.monitor_svc.runner.client import RunnerClient
    from services.monitor_svc.runner.scheduler import Scheduler

# From a millisecond (keeping up) to a minute (far behind).
SCHEDULE_LAG = Histogram(
    "monitors_runner_schedule_lag_seconds",
    "Seconds between a check's due time and its start.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class RunnerCollector(Collector):
    """Reads the scheduler's and the client's own counters at each scrape (nothing counted twice)."""

    def __init__(self, scheduler: Scheduler, client: RunnerClient) -> None:
        self._scheduler = scheduler
        self._client = client

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        scheduler, client = self._scheduler, self._client
        yield CounterMetricFamily("monitors_runner_checks", "Checks finished.", value=scheduler.checks)
        yield CounterMetricFamily("monitors_runner_checks_down", "Checks finished DOWN.", value=scheduler.down)
        yield GaugeMetricFamily("monitors_runner_monitors", "Monitors assigned to this runner.", value=len(scheduler))
        yield GaugeMetricFamily("monitors_runner_checks_running", "Checks under way.", value=scheduler.running_checks)
        yield GaugeMetricFamily(
            "monitors_runner_results_queued", "Results waiting to be reported.", value=scheduler.results.qsize()
        )
        results = CounterMetricFamily("monitors_runner_results", "Results by what became of them.", labels=["outcome"])
        results.add_metric(["accepted"], client.reported)
        results.add_metric(["rejected"], client.rejected)
        results.add_metric(["dropped"], client.dropped + scheduler.dropped)
        yield results
