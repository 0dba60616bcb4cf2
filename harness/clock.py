"""Times for test data, placed relative to the clock the suite runs under.

Stores keep data for a window measured back from their own now (InfluxDB retention policies, the embedded
store's sweep, rollups of recent hours), so test data must sit inside that window whatever the date. A fixed
date near the present passes for a while and then fails for everybody (tests/system/test_calendar_free.py
guards against it); a time computed here does not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def midnight_days_ago(days: int) -> datetime:
    """UTC midnight ``days`` days before today: a day-aligned (so also hour- and minute-aligned) time in the
    past, that tests can build ranges on with the alignment their windows need."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)
