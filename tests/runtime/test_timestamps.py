"""Conversions between protobuf Timestamps and datetimes agree with protobuf's own, to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from service_runtime.errors import InvalidArgument
from service_runtime.timestamps import EARLIEST, LATEST, from_duration, from_timestamp, to_timestamp

MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2001, 11, 23, 15, 4, 5, 123456, tzinfo=UTC),
    datetime(2001, 11, 23, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch: negative seconds, positive nanos
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2001, 6, 1, 12, 0, 0, 1),  # naive: local time
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_to_timestamp_matches_protobuf_and_round_trips(moment: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(moment.astimezone(UTC))
    stamp = to_timestamp(moment)
    assert stamp == expected
    assert stamp is not None
    assert 0 <= stamp.nanos < 1_000_000_000
    if EARLIEST <= moment.astimezone(UTC) < LATEST:
        assert from_timestamp(stamp, True, "t") == moment.astimezone(UTC)
    else:  # a valid Timestamp, yet past what the sample stores' 64-bit nanoseconds hold
        with pytest.raises(InvalidArgument):
            from_timestamp(stamp, True, "t")


@pytest.mark.parametrize(
    ("moment", "accepted"),
    [
        (EARLIEST, True),
        (EARLIEST - timedelta(microseconds=1), False),
        (LATEST - timedelta(microseconds=1), True),
        (LATEST, False),
        (datetime(1677, 9, 21, tzinfo=UTC), False),
        (datetime(2262, 4, 12, tzinfo=UTC), False),
    ],
)
def test_times_are_taken_from_1678_to_2261(moment: datetime, accepted: bool) -> None:
    stamp = to_timestamp(moment)
    assert stamp is not None
    if accepted:
        assert from_timestamp(stamp, True, "t") == moment
    else:
        with pytest.raises(InvalidArgument) as caught:
            from_timestamp(stamp, True, "time_range.end_time")
        assert [v.field for v in caught.value.violations] == ["time_range.end_time"]


def test_a_moment_beyond_the_range_is_refused() -> None:
    with pytest.raises(OverflowError):
        to_timestamp(datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))))


def test_none_stays_none() -> None:
    assert to_timestamp(None) is None
    assert from_timestamp(Timestamp(), False, "t") is None


@pytest.mark.parametrize(
    "stamp", [Timestamp(seconds=10**12), Timestamp(seconds=-(10**12)), Timestamp(seconds=1, nanos=-1)]
)
def test_a_timestamp_no_datetime_can_hold_names_its_field(stamp: Timestamp) -> None:
    with pytest.raises(InvalidArgument) as caught:
        from_timestamp(stamp, True, "time_range.start_time")
    assert [v.field for v in caught.value.violations] == ["time_range.start_time"]


@pytest.mark.parametrize(
    "duration",
    [Duration(seconds=10**15), Duration(seconds=-(10**15)), Duration(seconds=5, nanos=-5), Duration(nanos=2 * 10**9)],
)
def test_a_duration_that_is_not_a_valid_duration_names_its_field(duration: Duration) -> None:
    with pytest.raises(InvalidArgument) as caught:
        from_duration(duration, True, "alert_rule.for_duration")
    assert [v.field for v in caught.value.violations] == ["alert_rule.for_duration"]


def test_durations_in_range_convert() -> None:
    assert from_duration(Duration(seconds=-5, nanos=-500_000_000), True) == -timedelta(seconds=5.5)
    assert from_duration(Duration(seconds=315_576_000_000), True) == timedelta(seconds=315_576_000_000)
    assert from_duration(Duration(), False) is None
