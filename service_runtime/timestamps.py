"""Conversions between protobuf Timestamp / Duration and timezone-aware datetimes / timedeltas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from service_runtime.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for ``moment``; None stays None (the field is left unset)."""
    if moment is None:
        return None
    # Arithmetic instead of Timestamp.FromDatetime, which goes through a time tuple: that was a fifth of the
    # GetCurrentUser handler's time under cProfile.
    since_epoch = moment.astimezone(UTC) - _EPOCH  # naive: local time; beyond year 9999: OverflowError
    return Timestamp(seconds=since_epoch.days * 86_400 + since_epoch.seconds, nanos=since_epoch.microseconds * 1000)


# The times a request may name: what 64-bit nanoseconds since 1970 hold (1677-09-21 to 2262-04-11), the unit
# of the time-series stores, rounded in to whole years.
EARLIEST = datetime(1678, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 1, 1, tzinfo=UTC)
_EARLIEST_S = int((EARLIEST - _EPOCH).total_seconds())
_LATEST_S = int((LATEST - _EPOCH).total_seconds())


def from_timestamp(stamp: Timestamp, present: bool, field: str) -> datetime | None:
    """The datetime of a Timestamp field, or None when the field is unset (``present`` from HasField);
    INVALID_ARGUMENT naming ``field`` for one that is not a valid Timestamp or is outside EARLIEST to LATEST."""
    if not present:
        return None
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise InvalidArgument(field, "is not a valid time (nanos 0 to 999,999,999)")
    if not _EARLIEST_S <= stamp.seconds < _LATEST_S:
        raise InvalidArgument(field, "must be from the year 1678 to 2261")
    return stamp.ToDatetime(tzinfo=UTC)


def to_duration(span: timedelta | None) -> Duration | None:
    """A Duration for ``span``; None stays None."""
    if span is None:
        return None
    duration = Duration()
    duration.FromTimedelta(span)
    return duration


# What a google.protobuf.Duration may hold (its documented range: about 10,000 years either way).
_MAX_DURATION_SECONDS = 315_576_000_000


def from_duration(duration: Duration, present: bool, field: str = "duration") -> timedelta | None:
    """The timedelta of a Duration field, or None when unset; INVALID_ARGUMENT naming ``field`` for one that is
    not a valid Duration (out of range, nanos of another sign than seconds or past a second)."""
    if not present:
        return None
    seconds, nanos = duration.seconds, duration.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) >= 1_000_000_000
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        raise InvalidArgument(field, "is not a valid duration")
    return duration.ToTimedelta()
