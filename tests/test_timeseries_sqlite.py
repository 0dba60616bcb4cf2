"""The embedded time-series store: writes, range reads, and owner/monitor scoping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Sample, SqliteSampleStore, open_timeseries_store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def test_reads_back_one_field_in_range_and_order(tmp_path: Path) -> None:
    store = open_timeseries_store(f"sqlite:///{tmp_path / 'ts.sqlite3'}")
    samples = [
        Sample("usr_a", "mon_1", T0 + timedelta(minutes=i), {"response_time_ms": 100.0 + i, "is_up": 1.0})
        for i in range(10)
    ]
    await store.write(list(reversed(samples)))
    points = await store.query(
        "usr_a", "mon_1", "response_time_ms", T0 + timedelta(minutes=2), T0 + timedelta(minutes=5), 100
    )
    assert [p.value for p in points] == [102.0, 103.0, 104.0]
    assert [p.time for p in points] == [T0 + timedelta(minutes=m) for m in (2, 3, 4)]
    limited = await store.query("usr_a", "mon_1", "is_up", T0, T0 + timedelta(hours=1), 4)
    assert len(limited) == 4
    await store.close()


async def test_another_owner_reads_nothing(tmp_path: Path) -> None:
    store = SqliteSampleStore(tmp_path / "ts.sqlite3")
    await store.write([Sample("usr_a", "mon_1", T0, {"price": 70000.0})])
    assert await store.query("usr_b", "mon_1", "price", T0, T0 + timedelta(seconds=1), 10) == []
    assert len(await store.query("usr_a", "mon_1", "price", T0, T0 + timedelta(seconds=1), 10)) == 1
    await store.close()


async def test_samples_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ts.sqlite3"
    store = SqliteSampleStore(path)
    await store.write([Sample("usr_a", "mon_1", T0, {"price": 1.5}, {"provider": "coinbase"})])
    await store.close()
    reopened = SqliteSampleStore(path)
    assert [p.value for p in await reopened.query("usr_a", "mon_1", "price", T0, T0 + timedelta(1), 10)] == [1.5]
    await reopened.close()


@pytest.mark.parametrize("name", ["price') OR 1=1 --", "Price", "", "a.b", "x" * 64])
async def test_field_names_are_checked_before_querying(tmp_path: Path, name: str) -> None:
    store = SqliteSampleStore(tmp_path / "ts.sqlite3")
    with pytest.raises(InvalidArgument):
        await store.query("usr_a", "mon_1", name, T0, T0 + timedelta(1), 10)
    await store.close()


async def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    store = SqliteSampleStore(tmp_path / "ts.sqlite3")
    with pytest.raises(ValueError, match="timezone"):
        await store.write([Sample("usr_a", "mon_1", datetime(2026, 1, 1), {"price": 1.0})])
    await store.close()
