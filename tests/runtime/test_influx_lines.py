"""The InfluxDB store's line protocol is influxdb-client's, character for character (the store builds lines
itself for speed: see InfluxStore.line)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as LinePoint
from influxdb_client.domain.write_precision import WritePrecision

from service_runtime.timeseries import InfluxStore, Sample
from service_runtime.timeseries.influx_store import MAX_NOTE_CHARS, MEASUREMENT
from service_runtime.timeseries.port import to_ns

# Text with every character line protocol escapes, and others.
_TEXT = st.text(alphabet=st.sampled_from(list("ab,= \t\r\n\"\\'é_z0")), max_size=12)
_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**40), max_value=2**40).map(float),
    st.sampled_from([0.0, -0.0, 1.0, 200.0, 1e16, 1e-7, 123.456]),
)
_TIME = st.integers(min_value=0, max_value=4_000_000_000).map(
    lambda s: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=s, microseconds=s % 999_999)
)


def library_line(sample: Sample) -> str:
    """What influxdb-client's Point makes of a sample (the store's way before it built lines itself)."""
    point = LinePoint(MEASUREMENT).tag("owner", sample.owner_id).tag("monitor", sample.monitor_id)  # type: ignore[no-untyped-call]
    for key, value in sample.tags.items():
        point.tag(key, value)
    for key, number in sample.fields.items():
        point.field(key, float(number))
    for key, text in sample.notes.items():
        point.field(key, " ".join(text.split())[:MAX_NOTE_CHARS])
    point.time(to_ns(sample.time), WritePrecision.NS)
    return str(point.to_line_protocol())


@settings(max_examples=500, deadline=None)
@given(
    owner=_TEXT,
    monitor=_TEXT,
    when=_TIME,
    tags=st.dictionaries(_TEXT, _TEXT, max_size=3),
    fields=st.dictionaries(_TEXT, _NUMBER, max_size=4),
    notes=st.dictionaries(_TEXT, st.text(max_size=30), max_size=2),
)
def test_lines_are_what_influxdb_client_writes(
    owner: str, monitor: str, when: datetime, tags: dict[str, str], fields: dict[str, float], notes: dict[str, str]
) -> None:
    sample = Sample(owner, monitor, when, fields, tags, notes)

    assert InfluxStore.line(sample) == library_line(sample)


def test_a_website_sample() -> None:
    when = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    sample = Sample(
        "usr_a",
        "mon_1",
        when,
        {"is_up": 0.0, "response_time_ms": 12.5, "status_code": 503.0},
        {"location": "eu west"},
        {"message": 'bad "gateway"\n  from proxy'},
    )

    assert InfluxStore.line(sample) == (
        'check,location=eu\\ west,monitor=mon_1,owner=usr_a is_up=0,message="bad \\"gateway\\" from proxy",'
        f"response_time_ms=12.5,status_code=503 {to_ns(when)}"
    )
