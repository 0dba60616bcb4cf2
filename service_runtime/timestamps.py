"""Conversions between protobuf Timestamp and timezone-aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for ``moment``; None stays None (the field is left unset)."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp, present: bool) -> datetime | None:
    """The datetime of a Timestamp field, or None when the field is unset (``present`` from HasField)."""
    return stamp.ToDatetime(tzinfo=UTC) if present else None
