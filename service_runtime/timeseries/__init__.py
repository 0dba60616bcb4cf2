"""Time-series storage: the port services depend on, its two stores, and the queries built on it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from service_runtime.timeseries.influx_store import InfluxConfig, InfluxStore
from service_runtime.timeseries.port import (
    ROLLUP_RETENTION,
    Aggregation,
    Failure,
    Point,
    Sample,
    SeriesKey,
    TimedValue,
    TimeSeriesStore,
    check_field_name,
)
from service_runtime.timeseries.sqlite_store import SqliteSampleStore

__all__ = [
    "Aggregation",
    "Failure",
    "InfluxConfig",
    "InfluxStore",
    "Point",
    "Sample",
    "SeriesKey",
    "SqliteSampleStore",
    "TimeSeriesStore",
    "TimedValue",
    "check_field_name",
    "influx_config",
    "open_timeseries_store",
]


async def open_timeseries_store(
    url: str,
    raw_retention: timedelta = timedelta(days=30),
    rollup_retention: timedelta = ROLLUP_RETENTION,
    spool_dir: Path | None = None,
    shared_writers: bool = False,
) -> TimeSeriesStore:
    """The store named by ``MONITORS_TIMESERIES_URL``; an InfluxDB store writing samples keeps those it has not
    sent yet in ``spool_dir`` (the embedded store has them on disk when its write returns), and, with
    ``shared_writers`` (other processes write samples too), summarises from the raw samples, not its digests.

    - ``sqlite:///path/to/file.sqlite3``: embedded.
    - ``influxdb://[user:password@]host:port/database[?token=...&rp=...]`` (``influxdbs://`` for TLS):
      InfluxDB 1.x, or 2.x / 3.x through their v1-compatible API with a token.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url.removeprefix("sqlite:///")  # sqlite:///relative or sqlite:////absolute, as SQLAlchemy has it
        if not path or path == url:
            raise ValueError(f"not an embedded time-series URL: {url!r}")
        return SqliteSampleStore(Path(path), raw_retention, rollup_retention)
    if parts.scheme in ("influxdb", "influxdbs"):
        config = influx_config(url)
        return await InfluxStore.open(
            replace(
                config,
                raw_retention=raw_retention,
                rollup_retention=rollup_retention,
                spool_dir=spool_dir,
                shared_writers=shared_writers,
            )
        )
    raise ValueError(f"unsupported time-series URL {url!r}: use sqlite:///path or influxdb://host:port/database")


def influx_config(url: str) -> InfluxConfig:
    """Where and how to reach InfluxDB, from ``influxdb://[user:password@]host:port/database[?token=...&rp=...]``
    (``influxdbs://`` for TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("influxdb", "influxdbs"):
        raise ValueError(f"not an InfluxDB URL: {url!r}")
    database = parts.path.strip("/")
    if not database or not parts.hostname:
        raise ValueError(f"an InfluxDB URL needs a host and a database: {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = "https" if parts.scheme == "influxdbs" else "http"
    return InfluxConfig(
        url=f"{scheme}://{parts.hostname}:{parts.port or 8086}",
        database=database,
        retention_policy=query.get("rp", "monitors_raw"),
        token=query.get("token", ""),
        username=parts.username or "",
        password=parts.password or "",
    )
