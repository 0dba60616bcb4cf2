"""Structured logging on stderr: one JSON object per line (production), ``key=value`` text, or the console
format for a person at a terminal (``make run``).

What happens to monitors, alerts and notifications is logged at INFO on loggers under ``monitors.events``
(:func:`event_log`): one line each, a sentence a person reads. The console format shows those and warnings and
errors, nothing else unless MONITORS_LOG_LEVEL asks for more.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

# Attributes every LogRecord has; anything else passed with ``extra=`` is a structured field.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# One encoder for every line: json.dumps with any option builds a new one per call.
_ENCODER = json.JSONEncoder(default=str)
EVENTS = "monitors.events"
FORMATS = ("json", "text", "console")


def event_log(name: str) -> logging.Logger:
    """The logger of what a person watching the system wants to see as it happens (a monitor DOWN or UP, an
    alert firing or resolved, a notification delivered or failing): INFO lines whose message says it all."""
    return logging.getLogger(f"{EVENTS}.{name}")


def _fields(record: logging.LogRecord) -> list[tuple[str, Any]]:
    """The structured (``extra=``) fields of ``record``, but for private ones."""
    return [(k, v) for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")]


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '="' for c in text):
        return _ENCODER.encode(text)
    return text


def _with_fields(line: str, record: logging.LogRecord, formatter: logging.Formatter) -> str:
    fields = _fields(record)
    if fields:
        line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields)
    if record.exc_info:
        line += "\n" + formatter.formatException(record.exc_info)
    return line


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``: one line per record, its structured fields included (values
    with spaces, quotes or ``=`` JSON-quoted)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        return _with_fields(line, record, self)


class ConsoleFormatter(logging.Formatter):
    """For a person at a terminal, one line a record. An event (INFO under ``monitors.events``) is its time and
    sentence; anything else (a warning, an error, INFO lines asked for) adds the process (the service), its
    level, logger and fields: ``HH:MM:SS notify WARNING message [logger] key=value ...``."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        if record.levelno < logging.WARNING and record.name.startswith(EVENTS + "."):
            return f"{clock} {record.getMessage()}"
        line = f"{clock} {self._process} {record.levelname} {record.getMessage()} [{record.name}]"
        return _with_fields(line, record, self)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with its ``extra`` fields at top level."""

    # Every RPC logs a line: the timestamp's seconds part is formatted once per second, not per line.
    _second = -1
    _second_text = ""

    def timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(msecs):03d}Z"

    def entry(
        self, created: float, msecs: float, level: str, logger: str, msg: str, fields: Iterable[tuple[str, Any]]
    ) -> dict[str, Any]:
        """A line's JSON object: time, level, logger and message, then ``fields`` but for private ones."""
        entry: dict[str, Any] = {"ts": self.timestamp(created, msecs), "level": level, "logger": logger, "msg": msg}
        for key, value in fields:
            if not key.startswith("_"):
                entry[key] = value
        return entry

    def format(self, record: logging.LogRecord) -> str:
        extra = ((key, value) for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS)
        entry = self.entry(record.created, record.msecs, record.levelname, record.name, record.getMessage(), extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class JsonLineHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs for the JSON format, which :func:`log_fields` may write
    to directly."""

    formatter: JsonFormatter

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())

    def write_fields(self, logger: logging.Logger, level: int, msg: str, fields: Mapping[str, Any]) -> None:
        """The line :meth:`emit` writes for ``logger.log(level, msg, extra=fields)``, made without a record."""
        created = time.time()
        msecs = (created - int(created)) * 1000
        entry = self.formatter.entry(created, msecs, logging.getLevelName(level), logger.name, msg, fields.items())
        line = _ENCODER.encode(entry) + self.terminator
        with self.lock:  # type: ignore[union-attr]  # typeshed: Lock | None; Handler.__init__ creates it
            self.stream.write(line)
            self.stream.flush()


_direct: JsonLineHandler | None = None


def _direct_handler(logger: logging.Logger, level: int) -> JsonLineHandler | None:
    """The JSON handler a record of ``logger`` at ``level`` would reach, if it is the only place the record goes
    and nothing on the way filters it: logging as :func:`configure_logging` left it."""
    handler = _direct
    if handler is None or handler.filters or level < handler.level:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            return handler if current.handlers == [handler] else None
        current = current.parent if current.propagate else None
    return None


def log_fields(logger: logging.Logger, level: int, msg: str, fields: Mapping[str, Any]) -> None:
    """``logger.log(level, msg, extra=fields)`` for a line of structured fields, written directly when logging is
    as :func:`configure_logging` left it (its JSON handler on the root, no other handler or filter on the way).

    The per-call RPC line goes this way: through the logging module, making the record and passing it down the
    hierarchy cost 105,000 of the 252,000 instructions of an authenticated call's own work (callgrind); the
    direct line is the same JSON. Added handlers or filters (an embedding application's, pytest's caplog) see
    the record as usual.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _direct_handler(logger, level)
    if handler is None or not _STANDARD_ATTRS.isdisjoint(fields):
        logger.log(level, msg, extra=fields)  # logging itself refuses fields that name a record attribute
        return
    try:
        handler.write_fields(logger, level, msg, fields)
    except Exception:  # noqa: BLE001 - as a handler does: report it and go on
        handler.handleError(logging.makeLogRecord({"name": logger.name, "levelno": level, "msg": msg, **fields}))


def configure_logging(level: str = "INFO", fmt: str = "json", process: str = "") -> None:
    """Send all logs to stderr (stdout is kept for command output) in the chosen format: ``json``, ``text``, or
    ``console`` (events at INFO whatever ``level``, each line led by ``process``, the service's name)."""
    global _direct
    handler: logging.Handler
    if fmt == "json":
        handler = _direct = JsonLineHandler()
    else:
        _direct = None
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(ConsoleFormatter(process) if fmt == "console" else TextFormatter())
    # The console shows events even when it shows nothing else below warnings; other formats follow ``level``.
    logging.getLogger(EVENTS).setLevel(logging.INFO if fmt == "console" else logging.NOTSET)
    # No format shows the caller's source line, thread or process, so records skip gathering them (the
    # switches of the logging HOWTO's "Optimization" section). With the per-second timestamp above, that took
    # an authenticated call's own work from 443,000 to 414,000 instructions (callgrind).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
