"""Alerting, part 5: a local website starts failing -> a webhook receiver has the alert, through `make run`.

Starts ``python -m services.local_stack`` exactly as ``make run`` does (embedded: SQLite, the embedded
time-series store, logs at INFO), in a temporary ``MONITORS_DATA_DIR`` on free ports, with
``MONITORS_EGRESS=private-allowed`` for the whole stack (the notification service must reach the loopback
receiver too; ``make run`` gives it only to the runner) and ``MONITORS_CA_FILE`` trusting the receiver's
self-signed certificate (webhooks are https only). Then, as a user would: an API key from
``python -m services.admin create-api-key``, a default webhook channel pointing at a local HTTPS receiver, and
a website monitor (10 s interval, retries 0, so one failed check makes it DOWN) on a local HTTP target. Every
user has the default "a monitor is down" rule; nothing else is configured.

Each trial waits a random part of the check interval (so the failure starts at a random phase of the check
cycle), makes the target answer 503 from ``t0`` on, waits for the firing webhook, makes the target healthy and
waits for the resolved webhook before the next trial.

- ``detect_p50_s`` / ``detect_p99_s``: receive time of the firing webhook - ``t0``; about U(0, interval) plus
  the pipeline. Target: p99 <= ``check_interval_s`` + 1 s.
- ``detect_pipeline_p50_s`` / ``detect_pipeline_p99_s``: receive time - the time the target answered the first
  503 (the failing check itself), i.e. what the system adds after the check.
- ``detect_stages_p50_ms`` / ``detect_stages_p99_ms``: the pipeline split at the timestamps the services leave:
  ``check_to_report`` (the failing check -> the end of the runner's ReportResults call, in the monitor
  service's log), ``report_to_transition`` (-> the alert's transition time, the notification's
  ``event_time``), ``transition_to_send`` (-> the end of the SendNotification call, in the notification
  service's log) and ``send_to_receive`` (-> the webhook at the receiver).

Quantiles are nearest-rank: with 20 trials the p99 is the slowest trial. Log timestamps have millisecond
precision. Merges its figures into ``bench/results/alerting.json`` (other parts write other keys there).

    .venv/bin/python -m bench.alerting_e2e_bench [--trials 20] [--interval 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply, self_signed_certificate
from harness.services import REPO, free_port, python_env
from monitors.v1 import common_pb2, monitor_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import monitor_service_pb2 as mpb
from monitors.v1 import notification_service_pb2 as npb

RESULTS = REPO / "bench" / "results" / "alerting.json"
READY_LINE = "Ctrl-C stops everything"
STAGES = ("check_to_report", "report_to_transition", "transition_to_send", "send_to_receive")


class FlakyTarget:
    """The watched website: 200, or 503 while ``failing``; logs the wall time and status of every request."""

    def __init__(self) -> None:
        self.failing = False
        self.hits: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        status = 503 if self.failing else 200
        with self._lock:
            self.hits.append((time.time(), status))
        return Reply(status, b"down" if status == 503 else b"up")

    def first(self, status: int, since: float) -> float | None:
        with self._lock:
            return next((t for t, s in self.hits if s == status and t >= since), None)


@dataclass
class Webhook:
    time: float
    body: dict[str, Any]


class WebhookReceiver:
    """The customer's webhook endpoint (HTTPS): answers 200 and logs the wall time and JSON of every POST."""

    def __init__(self) -> None:
        self.received: list[Webhook] = []
        self._lock = threading.Lock()

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        arrived = time.time()
        with self._lock:
            self.received.append(Webhook(arrived, json.loads(body)))
        return Reply(200, b"received")

    def wait_for(self, kind: str, since: float, timeout_s: float) -> Webhook | None:
        """The first webhook of ``kind`` received at or after ``since``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = next((w for w in self.received if w.time >= since and w.body.get("kind") == kind), None)
            if found is not None:
                return found
            time.sleep(0.01)
        return None


@dataclass
class LocalStack:
    """``python -m services.local_stack`` as ``make run`` starts it, its output (the services' JSON logs
    included) going to ``log_path``."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    addresses: dict[str, str]
    log_path: Path
    _log: Any = field(repr=False)

    @classmethod
    def start(cls, directory: Path, extra: dict[str, str]) -> LocalStack:
        addresses = {name: f"127.0.0.1:{free_port()}" for name in ("monitor", "alert", "notify", "runner")}
        env = python_env(
            {
                "MONITORS_DATA_DIR": str(directory / "data"),
                **{f"MONITORS_{name.upper()}_LISTEN": address for name, address in addresses.items()},
                "MONITORS_MONITOR_TARGET": addresses["monitor"],
                "MONITORS_NOTIFY_TARGET": addresses["notify"],
                "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
                "MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
                "MONITORS_MCP_LISTEN": f"127.0.0.1:{free_port()}",  # make run also starts the MCP adapter
                **extra,
            }
        )
        log_path = directory / "stack.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.local_stack"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        stack = cls(process, env, addresses, log_path, log)
        deadline = time.monotonic() + 120
        while READY_LINE not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                stack.stop()
                raise RuntimeError("local stack did not start:\n" + log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.2)
        return stack

    def admin(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "services.admin", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines the services wrote so far (the launcher's own text skipped)."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    def stop(self) -> None:
        """Ctrl-C, as a user stops ``make run``; the launcher stops its services with SIGTERM."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class Trial:
    t0: float
    failing_check: float | None = None
    fired: float | None = None
    transition: float | None = None


def wall(text: str) -> float:
    """A log line's ``ts`` or a notification's ``event_time`` as Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rpc_ends(lines: list[dict[str, Any]], method: str) -> list[float]:
    return sorted(wall(line["ts"]) for line in lines if line.get("msg") == "rpc" and line.get("method") == method)


def first_at_or_after(times: list[float], moment: float) -> float | None:
    # Log times are truncated to the millisecond: allow for it.
    return next((t for t in times if t >= moment - 0.001), None)


def stages(trial: Trial, reports: list[float], sends: list[float]) -> dict[str, float] | None:
    """The trial's pipeline split at the services' timestamps, in ms, or None when one is missing."""
    if trial.failing_check is None or trial.fired is None or trial.transition is None:
        return None
    report = first_at_or_after(reports, trial.failing_check)
    send = first_at_or_after(sends, trial.transition)
    if report is None or send is None:
        return None
    points = (trial.failing_check, report, trial.transition, send, trial.fired)
    return {name: round((b - a) * 1000, 1) for name, a, b in zip(STAGES, points[:-1], points[1:], strict=True)}


def run(trials: int, interval_s: int, seed: int, directory: Path, keep_log: Path | None) -> dict[str, Any]:
    rng = random.Random(seed)
    target, receiver = FlakyTarget(), WebhookReceiver()
    cert, key = self_signed_certificate(directory)
    # Every call logged as JSON (make run shows warnings only): the stages of the pipeline are read from them.
    extra = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(cert),
        "MONITORS_LOG_LEVEL": "INFO",
        "MONITORS_LOG_FORMAT": "json",
    }
    with (
        HttpServer() as site,
        HttpServer((cert, key)) as hooks,
        LocalStack.start(directory, extra) as stack,
        grpc.insecure_channel(stack.addresses["monitor"]) as monitor_channel,
        grpc.insecure_channel(stack.addresses["notify"]) as notify_channel,
    ):
        site.routes["/"] = target
        hooks.routes["/hook"] = receiver
        key_text = stack.admin("create-api-key", "--email", "bench@example.com")
        metadata = (("authorization", f"Bearer {key_text}"),)
        notify = notification_service_pb2_grpc.NotificationServiceStub(notify_channel)
        monitors = monitor_service_pb2_grpc.MonitorServiceStub(monitor_channel)
        channel = npb.Channel(
            display_name="bench hook", webhook=npb.WebhookConfig(url=hooks.url("/hook")), is_default=True
        )
        notify.CreateChannel(npb.CreateChannelRequest(channel=channel), metadata=metadata, timeout=10)
        monitor = mpb.Monitor(
            display_name="bench site",
            spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=site.url("/"))),
            interval=duration_pb2.Duration(seconds=interval_s),
            timeout=duration_pb2.Duration(seconds=5),
            retries=0,
        )
        created = monitors.CreateMonitor(mpb.CreateMonitorRequest(monitor=monitor), metadata=metadata, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            status = monitors.GetMonitorStatus(
                mpb.GetMonitorStatusRequest(id=created.monitor.id), metadata=metadata, timeout=10
            ).status
            if status.state == common_pb2.MONITOR_STATE_UP:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the monitor did not come UP within 60 s")
            time.sleep(0.2)

        done: list[Trial] = []
        missed = 0
        for number in range(1, trials + 1):
            time.sleep(rng.uniform(0, interval_s))  # a random phase of the check cycle
            trial = Trial(t0=time.time())
            target.failing = True
            fired = receiver.wait_for("alert_firing", trial.t0, timeout_s=3 * interval_s + 30)
            target.failing = False
            healthy = time.time()
            trial.failing_check = target.first(503, trial.t0)
            if fired is None:
                missed += 1
                print(f"trial {number}: no firing webhook within {3 * interval_s + 30} s", file=sys.stderr)
            else:
                trial.fired = fired.time
                trial.transition = wall(fired.body["event_time"]) if fired.body.get("event_time") else None
                done.append(trial)
                after = fired.time - trial.failing_check if trial.failing_check else float("nan")
                print(
                    f"trial {number:2}: detect {fired.time - trial.t0:6.2f} s, pipeline {after:5.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
            if receiver.wait_for("alert_resolved", healthy, timeout_s=3 * interval_s + 30) is None:
                raise RuntimeError(f"trial {number}: no resolved webhook; the next trial could not start clean")
        lines = stack.log_lines()
    if keep_log is not None:
        keep_log.write_bytes(stack.log_path.read_bytes())

    reports, sends = (
        rpc_ends(lines, "/monitors.v1.MonitorService/ReportResults"),
        rpc_ends(lines, "/monitors.v1.NotificationService/SendNotification"),
    )
    detect = [t.fired - t.t0 for t in done if t.fired is not None]
    pipeline = [t.fired - t.failing_check for t in done if t.fired is not None and t.failing_check is not None]
    split = [s for t in done if (s := stages(t, reports, sends)) is not None]
    warnings = [line for line in lines if line.get("level") in ("WARNING", "ERROR", "CRITICAL")]
    figures: dict[str, Any] = {
        "detect_p50_s": round(nearest_rank(detect, 0.50), 2) if detect else None,
        "detect_p99_s": round(nearest_rank(detect, 0.99), 2) if detect else None,
        "detect_max_s": round(max(detect), 2) if detect else None,
        "check_interval_s": interval_s,
        "detect_trials": len(done),
        "detect_missed": missed,
        "detect_pipeline_p50_s": round(nearest_rank(pipeline, 0.50), 3) if pipeline else None,
        "detect_pipeline_p99_s": round(nearest_rank(pipeline, 0.99), 3) if pipeline else None,
        "detect_stages_p50_ms": {n: nearest_rank([s[n] for s in split], 0.50) for n in STAGES} if split else None,
        "detect_stages_p99_ms": {n: nearest_rank([s[n] for s in split], 0.99) for n in STAGES} if split else None,
        "detect_stack_warnings": len(warnings),
        "detect_cpus": os.cpu_count(),
        "detect_python": platform.python_version(),
    }
    for line in warnings[:5]:
        print("stack warning:", json.dumps(line)[:300], file=sys.stderr)
    return figures


def merge_figures(path: Path, figures: dict[str, Any]) -> None:
    """Write ``figures`` into ``path``, keeping the keys other parts of the benchmark wrote there (read just
    before writing, since they may run in between)."""
    existing: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    existing.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=int, default=10, help="the monitor's check interval, seconds")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file the figures merge into")
    parser.add_argument("--keep-log", type=Path, help="copy the stack's output (the services' JSON logs) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alerting-e2e-") as directory:
        figures = run(args.trials, args.interval, args.seed, Path(directory), args.keep_log)
    merge_figures(args.results, figures)


if __name__ == "__main__":
    main()
