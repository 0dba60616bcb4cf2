"""What ``make run``'s terminal tells a person: one line when a monitor goes DOWN or comes back UP, when an alert
fires or resolves, and per notification sent; no line per call. The text log format keeps the structured fields
(``key=value``), and the console format shows warnings with theirs."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.services import REPO, free_port, python_env
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime import logs

RPC_FIELDS = {"method": "/monitors.v1.MonitorService/GetMonitor", "code": "NOT_FOUND", "detail": "monitor x gone"}


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """The stream the configured handler writes to; logging's global state is restored after the test."""
    root = logging.getLogger()
    events = logging.getLogger(logs.EVENTS)
    saved = (root.handlers[:], root.level, events.level, logs._direct)
    yield io.StringIO()
    root.handlers[:], level, events_level, logs._direct = saved
    root.setLevel(level)
    events.setLevel(events_level)


def configure(buffer: io.StringIO, level: str, fmt: str, process: str = "") -> None:
    logs.configure_logging(level, fmt, process)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


def test_the_text_format_shows_the_structured_fields(stderr: io.StringIO) -> None:
    configure(stderr, "INFO", "text")
    logging.getLogger("monitors.rpc").info("rpc", extra=RPC_FIELDS)
    [line] = stderr.getvalue().splitlines()
    assert " INFO monitors.rpc rpc " in line
    assert "method=/monitors.v1.MonitorService/GetMonitor" in line
    assert "code=NOT_FOUND" in line
    assert 'detail="monitor x gone"' in line  # a value with spaces stays one field


def test_the_console_format_shows_events_and_warnings_and_no_call_lines(stderr: io.StringIO) -> None:
    configure(stderr, "WARNING", "console", "monitor")
    logging.getLogger("monitors.rpc").info("rpc", extra=RPC_FIELDS)
    logs.log_fields(logging.getLogger("monitors.rpc"), logging.INFO, "rpc", RPC_FIELDS)
    logs.event_log("monitor").info("monitor 'shop' (mon_1) is DOWN: HTTP 500", extra={"monitor_id": "mon_1"})
    logging.getLogger("services.x").warning("store slow", extra={"seconds": 2.5})
    event, warning = stderr.getvalue().splitlines()
    assert event.endswith(" monitor 'shop' (mon_1) is DOWN: HTTP 500")
    assert " monitor monitor" not in event
    assert "monitor_id" not in event  # the sentence says it all
    assert " monitor WARNING store slow [services.x] seconds=2.5" in warning


def test_other_formats_follow_the_level_for_events_too(stderr: io.StringIO) -> None:
    configure(stderr, "WARNING", "console")
    configure(stderr, "WARNING", "json")
    logs.event_log("monitor").info("monitor 'shop' is UP")
    assert stderr.getvalue() == ""


class Output:
    """A child's combined output, read line by line on a thread as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._stdout = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line.rstrip("\n"))

    def close(self) -> None:
        """Once the child is gone: the rest read, the pipe closed."""
        self._thread.join(timeout=10)
        self._stdout.close()

    def wait_for(self, *words: str, timeout_s: float = 60.0, after: int = 0) -> int:
        """The index of the first line from ``after`` on that holds every one of ``words``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index in range(after, len(self.lines)):
                if all(word in self.lines[index] for word in words):
                    return index
            time.sleep(0.1)
        raise AssertionError(f"no line with {words} in:\n" + "\n".join(self.lines[-60:]))


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Output, dict[str, str]]]:
    """``make run``'s launcher on free ports, with the log settings it chooses itself (none set here)."""
    ports = {name: free_port() for name in ("monitor", "alert", "notify", "runner")}
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path / "data"),
            "MONITORS_MONITOR_TARGET": f"127.0.0.1:{ports['monitor']}",
            "MONITORS_NOTIFY_TARGET": f"127.0.0.1:{ports['notify']}",
            **{f"MONITORS_{n.upper()}_LISTEN": f"127.0.0.1:{p}" for n, p in ports.items()},
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_MCP_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_MIN_INTERVAL_S": "1",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "services.local_stack"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(process)
    try:
        output.wait_for("Ctrl-C stops everything", timeout_s=120)
        yield process, output, env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output.close()


@pytest.mark.timeout(300)
def test_make_run_says_when_a_monitor_goes_down_and_up_and_what_was_sent(
    launcher: tuple[subprocess.Popen[str], Output, dict[str, str]],
) -> None:
    process, output, env = launcher
    key = subprocess.run(
        [sys.executable, "-m", "services.admin", "create-api-key", "--email", "watcher@example.com"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    metadata = (("authorization", f"Bearer {key}"),)
    with HttpServer() as site, grpc.insecure_channel(env["MONITORS_MONITOR_TARGET"]) as channel:
        site.routes["/"] = Reply(200, b"home")
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        monitor = monitor_service_pb2.Monitor(
            display_name="shop",
            spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=site.url("/"))),
            interval=duration_pb2.Duration(seconds=1),
            timeout=duration_pb2.Duration(seconds=1),
        )
        created = stub.CreateMonitor(
            monitor_service_pb2.CreateMonitorRequest(monitor=monitor), metadata=metadata, timeout=10
        ).monitor
        up = output.wait_for(f"monitor 'shop' ({created.id}) is UP")
        site.routes["/"] = Reply(500, b"broken")
        down = output.wait_for(f"({created.id}) is DOWN: ", "500", after=up)
        output.wait_for("alert 'A monitor is down' on 'shop'", "is FIRING", after=down)
        output.wait_for("alert_firing notification to email w****@example.com", "delivered", after=down)
        site.routes["/"] = Reply(200, b"home")
        back = output.wait_for(f"({created.id}) is UP again after", after=down)
        output.wait_for("alert 'A monitor is down' on 'shop'", "is RESOLVED", after=back)
    text = "\n".join(output.lines)
    assert " rpc" not in text, "a line per call reached the terminal"
    assert "{" not in "".join(line[:1] for line in output.lines), "JSON lines reached the terminal"
    assert " WARNING " not in text, text
    assert process.poll() is None
