"""Histories of monitors in the shapes a summary must get right, written by the summaries' tests to both
time-series stores, and a count of the statements a store runs."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from harness.clock import midnight_days_ago
from service_runtime.timeseries import InfluxStore, Sample, SqliteSampleStore, TimeSeriesStore

OWNER = "usr_a"
H0 = midnight_days_ago(2) + timedelta(hours=9)
MINUTE = timedelta(minutes=1)
NOW = H0 + timedelta(days=1)


def check(monitor: str, minute: float, up: bool, cause: str = "timed out", website: bool = True) -> Sample:
    rng = random.Random(f"{monitor}{minute}")
    fields = {"is_up": 1.0 if up else 0.0}
    if website:
        fields |= {"response_time_ms": rng.uniform(20, 900), "status_code": 200.0 if up else 503.0}
        fields |= {"cert_days_left": 90 - minute / 1000}
    notes = {} if up else {"error_class": "timeout" if "timed" in cause else "status", "message": cause}
    return Sample(OWNER, monitor, H0 + minute * MINUTE, fields, {"location": "eu"}, notes)


def histories() -> dict[str, list[Sample]]:
    """Every 5 minutes over the 2-hour range (and some before it), in the shapes a summary must get right."""
    steady = [check("mon_steady", m, True) for m in range(-30, 120, 5)]
    ended = [check("mon_ended", m, not 40 <= m < 55, "timed out" if m < 45 else "HTTP 503") for m in range(0, 120, 5)]
    ongoing = [check("mon_ongoing", m, m < 100) for m in range(-10, 120, 5)]
    before = [check("mon_before", m, m >= 20) for m in range(-20, 120, 5)]
    new = [check("mon_new", m, m != 90) for m in range(60, 120, 5)]
    silent = [check("mon_silent", m, False) for m in range(-60, -50, 5)]  # down before the range, nothing since
    tcp = [check("mon_tcp", m, m % 30 != 0, website=False) for m in range(0, 120, 5)]
    coin = [Sample(OWNER, "mon_coin", H0 + m * MINUTE, {"is_up": 1.0, "price": 100 + m}) for m in range(0, 120, 5)]
    other_owner = [Sample("usr_b", "mon_steady", H0 + m * MINUTE, {"is_up": 0.0}) for m in range(0, 120, 5)]
    return {
        "mon_steady": steady,
        "mon_ended": ended,
        "mon_ongoing": ongoing,
        "mon_before": before,
        "mon_new": new,
        "mon_silent": silent,
        "mon_tcp": tcp,
        "mon_coin": coin,
        "mon_empty": [],
        "other_owner": other_owner,
    }


KINDS = {
    "mon_steady": "website",
    "mon_ended": "website",
    "mon_ongoing": "website",
    "mon_before": "website",
    "mon_new": "website",
    "mon_silent": "website",
    "mon_empty": "website",
    "mon_tcp": "tcp",
    "mon_coin": "crypto_price",
}


def count_statements(store: TimeSeriesStore, monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count the statements ``store`` runs from now on: InfluxQL queries, or SQLite ``execute`` calls."""
    counter = Counter()
    if isinstance(store, InfluxStore):
        query = store._query

        async def counted(*args: object, **kwargs: object) -> object:
            counter.count += 1
            return await query(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "_query", counted)
    else:
        assert isinstance(store, SqliteSampleStore)
        connection = store._connection

        class Counting:
            def execute(self, *args: object) -> object:
                counter.count += 1
                return connection.execute(*args)  # type: ignore[arg-type]

            def __getattr__(self, name: str) -> object:
                return getattr(connection, name)

        monkeypatch.setattr(store, "_connection", Counting())
        monkeypatch.setattr(store._digests, "_connection", Counting())
    return counter


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count
