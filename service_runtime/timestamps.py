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


def from_timestamp(stamp: Timestamp, present: bool, field: str) -> datetime | None:
    """The datetime of a Timestamp field, or None when the field is unset (``present`` from HasField);
    INVALID_ARGUMENT naming ``field`` for one outside what a Timestamp may hold."""
    if not present:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except ValueError:
        raise InvalidArgument(field, "is not a valid time (years 1 to 9999, nanos 0 to 999,999,999)") from None


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
