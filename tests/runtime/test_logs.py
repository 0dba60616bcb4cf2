"""Structured log lines: the direct path for per-call lines writes what the logging module would, and steps aside
whenever logging is configured otherwise than as ``configure_logging`` left it."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from service_runtime import logs

FIELDS = {"method": "/monitors.v1.AccountService/GetCurrentUser", "code": "OK", "duration_ms": 0.5, "request_id": "r1"}


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """What the handler :func:`configure` installs writes; logging's global state is restored after the test."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile, logging.logThreads, logging.logProcesses, logs._direct)
    yield io.StringIO()
    root.handlers[:], level, logging._srcfile, logging.logThreads, logging.logProcesses, logs._direct = saved
    root.setLevel(level)


def configure(buffer: io.StringIO, fmt: str) -> None:
    """Logging as a service configures it, its stderr handler pointed at ``buffer`` (pytest owns sys.stderr)."""
    logs.configure_logging("INFO", fmt)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


class Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_the_direct_line_is_the_line_logging_writes(stderr: io.StringIO) -> None:
    configure(stderr, "json")
    logger = logging.getLogger("monitors.test")
    logger.log(logging.INFO, "rpc", extra=FIELDS)
    logs.log_fields(logger, logging.INFO, "rpc", FIELDS)
    through_logging, direct = lines(stderr)
    assert list(json.loads(direct)) == list(json.loads(through_logging))  # same keys, same order
    assert json.loads(direct) | {"ts": ""} == json.loads(through_logging) | {"ts": ""}
    assert json.loads(direct)["logger"] == "monitors.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", json.loads(direct)["ts"])
    # Private fields are left out both ways.
    logger.log(logging.INFO, "rpc", extra={"_hidden": 1, "shown": 2})
    logs.log_fields(logger, logging.INFO, "rpc", {"_hidden": 1, "shown": 2})
    for line in lines(stderr)[-2:]:
        assert json.loads(line) | {"ts": ""} == {
            "ts": "",
            "level": "INFO",
            "logger": "monitors.test",
            "msg": "rpc",
            "shown": 2,
        }


def test_lines_below_the_level_are_not_written(stderr: io.StringIO) -> None:
    configure(stderr, "json")
    logs.log_fields(logging.getLogger("monitors.test"), logging.DEBUG, "rpc", FIELDS)
    assert stderr.getvalue() == ""


def test_an_added_handler_sees_the_record_and_the_line_is_still_written(stderr: io.StringIO) -> None:
    configure(stderr, "json")
    logger = logging.getLogger("monitors.test.handler")
    handler = Collecting()
    logger.addHandler(handler)
    try:
        logs.log_fields(logger, logging.INFO, "rpc", FIELDS)
    finally:
        logger.removeHandler(handler)
    assert [(r.getMessage(), r.__dict__["request_id"]) for r in handler.records] == [("rpc", "r1")]
    assert json.loads(lines(stderr)[0])["request_id"] == "r1"  # propagated to the root's JSON handler


@pytest.mark.parametrize("where", ["logger", "root handler"])
def test_a_filter_on_the_way_is_obeyed(stderr: io.StringIO, where: str) -> None:
    configure(stderr, "json")
    logger = logging.getLogger("monitors.test.filter")
    target: logging.Filterer = logger if where == "logger" else logging.getLogger().handlers[0]
    drop_rpc = logging.Filter("nothing.matches")
    target.addFilter(drop_rpc)
    try:
        logs.log_fields(logger, logging.INFO, "rpc", FIELDS)
    finally:
        target.removeFilter(drop_rpc)
    assert stderr.getvalue() == ""


def test_the_text_format_goes_through_logging(stderr: io.StringIO) -> None:
    configure(stderr, "text")
    logs.log_fields(logging.getLogger("monitors.test"), logging.INFO, "rpc", FIELDS)
    fields = "method=/monitors.v1.AccountService/GetCurrentUser code=OK duration_ms=0.5 request_id=r1"
    assert lines(stderr)[0].endswith(f" INFO monitors.test rpc {fields}")


def test_a_field_naming_a_record_attribute_is_refused_as_logging_refuses_it(stderr: io.StringIO) -> None:
    configure(stderr, "json")
    with pytest.raises(KeyError, match="overwrite"):
        logs.log_fields(logging.getLogger("monitors.test"), logging.INFO, "rpc", {"msg": "x"})


def test_a_failed_write_is_reported_as_a_handler_reports_it(
    stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(stderr, "json")
    reported: list[logging.LogRecord] = []
    handler = logs._direct
    assert handler is not None
    monkeypatch.setattr(handler, "handleError", reported.append)

    def broken_write(text: str) -> int:
        raise BrokenPipeError

    monkeypatch.setattr(handler.stream, "write", broken_write)
    logs.log_fields(logging.getLogger("monitors.test"), logging.INFO, "rpc", FIELDS)
    assert [(r.getMessage(), r.__dict__["request_id"]) for r in reported] == [("rpc", "r1")]
