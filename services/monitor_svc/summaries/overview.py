"""Summaries of many monitors at once (SummarizeMonitors, and every "how are my monitors doing?"): the figures
SummarizeMonitor gives one monitor, built from :meth:`TimeSeriesStore.digests`, a few statements grouped by
monitor whatever their number, instead of a handful of queries per monitor.

Ranges up to :data:`~services.monitor_svc.summaries.queries.LONG_RANGE` (two days) are read this way. Longer ones
also weigh hours from the hourly rollups, and go through the per-owner functions of :mod:`.queries`; coins'
volatility needs each price series, so coin monitors are summarised by :func:`.queries.summarize_crypto_price`.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from service_runtime.timeseries.port import Failure, RangeDigest, SeriesKey, TimeSeriesStore
from service_runtime.timeseries.queries import check_range
from services.monitor_svc.summaries.queries import (
    CARRY_IN_LOOKBACK,
    LONG_RANGE,
    MAX_FAILURES,
    AvailabilitySummary,
    CryptoPriceSummary,
    Outage,
    WebsiteSummary,
    _causes,
    _minus,
    summarize_availability_many,
    summarize_crypto_price,
    summarize_websites,
)

Summary = WebsiteSummary | CryptoPriceSummary | AvailabilitySummary
WEBSITE = "website"
CRYPTO_PRICE = "crypto_price"


async def summarize_many(
    store: TimeSeriesStore,
    owner_id: str,
    monitors: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> dict[str, Summary]:
    """The summary of each of an owner's ``monitors`` (id, kind) over ``[start, end)``: a website's uptime, outages,
    response-time percentiles and certificate, a coin's prices, any other kind's availability; the same figures
    as :func:`.queries.summarize_websites`, :func:`.queries.summarize_crypto_price` and
    :func:`.queries.summarize_availability_many` give."""
    check_range(start, end)
    now = now or datetime.now(UTC)
    coins = [m for m, kind in monitors if kind == CRYPTO_PRICE]
    others = [(m, kind) for m, kind in monitors if kind != CRYPTO_PRICE]
    found: dict[str, Summary] = {}
    if end - start > LONG_RANGE:
        websites = [m for m, kind in others if kind == WEBSITE]
        rest = [m for m, kind in others if kind != WEBSITE]
        found.update(await summarize_websites(store, owner_id, websites, start, end, now) if websites else {})
        found.update(await summarize_availability_many(store, owner_id, rest, start, end, now) if rest else {})
    elif others:
        digests = await store.digests(owner_id, [m for m, _ in others], start, end, _minus(start, CARRY_IN_LOOKBACK))
        horizon = min(end, now)
        for monitor_id, kind in others:
            digest = digests.get(monitor_id) or RangeDigest()
            availability = availability_of(digest, start, end, horizon)
            if kind == WEBSITE:
                p50, p95, p99 = digest.response_time
                found[monitor_id] = WebsiteSummary(availability, p50, p95, p99, digest.cert_days_left)
            else:
                found[monitor_id] = availability
    summaries = await asyncio.gather(
        *(summarize_crypto_price(store, SeriesKey(owner_id, m), start, end, now) for m in coins)
    )
    found.update(zip(coins, summaries, strict=True))
    return found


def availability_of(digest: RangeDigest, start: datetime, end: datetime, horizon: datetime) -> AvailabilitySummary:
    """:class:`AvailabilitySummary` of a range of at most two days from its digest, as
    :func:`.queries.summarize_availability_many` computes it (no rollups: the range is within raw retention)."""
    carried = digest.carried is not None
    if not digest.checks and not carried:
        return AvailabilitySummary(None, 0, 0)
    outages: list[Outage] = []
    failures = [f for f in digest.is_up_series if f[1] == 0][:MAX_FAILURES]
    if digest.up < digest.checks or digest.carried == 0:
        outages = _outages(digest.is_up_series, failures, start, end, horizon, digest.carried == 0)
    downtime = sum((o.duration for o in outages), timedelta(0))
    if carried:
        observed = max(horizon - start, timedelta(0))
    else:
        observed = max(horizon - (digest.first_time or horizon), timedelta(0))
    return AvailabilitySummary(
        uptime_percent=(observed - downtime) / observed * 100 if observed > timedelta(0) else None,
        checks=digest.checks,
        failed_checks=digest.checks - digest.up,
        outages=outages,
        truncated=len(failures) >= MAX_FAILURES,
        observed=observed,
        downtime=downtime,
    )


def _outages(
    series: Sequence[tuple[datetime, float, str, str]],
    failures: Sequence[tuple[datetime, float, str, str]],
    start: datetime,
    end: datetime,
    horizon: datetime,
    down_at_start: bool,
) -> list[Outage]:
    """:func:`.queries._outages` with each outage's end (the first successful check after it) found in the
    monitor's is_up series instead of asked of the store."""
    found = [Failure(t, error_class, message) for t, _, error_class, message in failures]
    times = [f.time for f in found]
    recoveries = [t for t, is_up, _, _ in series if is_up == 1 and t < end]

    def next_up(after: datetime) -> datetime | None:
        index = bisect.bisect_right(recoveries, after)
        return recoveries[index] if index < len(recoveries) else None

    outages: list[Outage] = []
    index = 0
    while index < len(found) or (down_at_start and not outages):
        carried = down_at_start and not outages
        since = start if carried else found[index].time
        recovered = next_up(since - timedelta(microseconds=1) if carried else since)
        stop = len(found) if recovered is None else bisect.bisect_left(times, recovered)
        causes = _causes(found[index:stop])
        first_class, first_message = (causes[0].error_class, causes[0].message) if causes else ("", "")
        if recovered is None:
            outages.append(Outage(since, None, max(horizon - since, timedelta(0)), first_class, first_message, causes))
            break
        outages.append(Outage(since, recovered, recovered - since, first_class, first_message, causes))
        index = max(stop, index)
    return outages
