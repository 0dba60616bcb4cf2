"""Side by side on this machine: our system (``make run``'s processes, embedded) and Prometheus +
blackbox_exporter + Alertmanager (Debian's packages, installed by ``scripts/ensure-compare-packages.sh``,
started here as plain processes on loopback ports; Alertmanager with an empty ``--cluster.listen-address=``).

CPU. N HTTP targets, each checked every interval, in three ways, one system at a time:

- ``keepalive``: every target a path on one origin that keeps connections open (our runner reuses them;
  blackbox opens a fresh connection per probe whatever the server allows);
- ``fresh``: one port per target, and the target closes the connection after each answer, so every check of
  either system opens a new TCP connection (the fair case: what blackbox always does);
- ``fresh_tls``: the same over TLS (a self-signed certificate both systems are told to trust).

Each phase waits two intervals for the checks to spread out, then measures a window: the CPU seconds (user +
system, from /proc) of the system's processes (ours: the launcher, the three services, the runner and the MCP
adapter; theirs: prometheus, blackbox_exporter, alertmanager), and the checks the targets answered in it.
Figures: CPU seconds per 1,000 checks and ours/theirs.

Detection. Both systems watch the same targets at the same interval (ours: a website monitor with retries 0 and
the default "monitor down" rule, a default https webhook channel; theirs: a blackbox probe, the rule
``probe_success == 0`` with ``for: 0s`` evaluated every interval, Alertmanager posting to a webhook). Prometheus
sends to two Alertmanagers: one with Alertmanager's default timings (group_wait 30 s, group_interval 5 m) and one
tuned (group_wait 0 s, group_interval 1 s); both group by alertname and instance. Each trial waits a random part of
the interval, makes a fresh target (one not used before, so no Alertmanager group is already open) answer 503 from
``t0`` on, waits until every system's webhook has the alert, makes the target healthy at ``t1`` and waits for our
resolved notice (and the tuned Alertmanager's). Detect = alert webhook - t0; resolve = resolved webhook - t1.
Quantiles are nearest-rank: with a handful of trials the p99 is the slowest trial.

Writes ``bench/results/compare.json``, ``compare.md`` (a table) and ``compare.png`` (a chart).

    .venv/bin/python -m bench.compare [--targets 1000] [--interval 10] [--window 60] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench.alerting_e2e_bench import LocalStack, WebhookReceiver, nearest_rank
from harness.http import HttpServer, Reply, self_signed_certificate
from harness.services import REPO, free_port
from monitors.v1 import common_pb2, monitor_service_pb2_grpc, notification_service_pb2_grpc
from monitors.v1 import monitor_service_pb2 as mpb
from monitors.v1 import notification_service_pb2 as npb

RESULTS = REPO / "bench" / "results"
PHASES = ("keepalive", "fresh", "fresh_tls")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- targets -----------------------------------------------------------------------------------------------


class TargetServer:
    """One listening port answering every path with 200 (or 503 while ``failing``), counting the requests;
    with ``close`` it ends the connection after each answer."""

    def __init__(self, close: bool, certificate: tuple[Path, Path] | None) -> None:
        self.hits: list[float] = []
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.hits.append(time.time())
                status = 503 if outer.failing else 200
                body = b"down" if status == 503 else b"up"
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                if close:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # clients hanging up (timeouts, TLS probes) are not the bench's business

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def hits_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.hits) if start <= t < end)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def targets_for(
    phase: str, count: int, certificate: tuple[Path, Path]
) -> Iterator[tuple[list[str], Callable[..., int]]]:
    """The phase's target URLs and a counter of the requests they answered between two times."""
    servers: list[TargetServer]
    if phase == "keepalive":
        servers = [TargetServer(close=False, certificate=None)]
        urls = [servers[0].url(f"/target/{i}") for i in range(count)]
    else:
        tls = certificate if phase == "fresh_tls" else None
        servers = [TargetServer(close=True, certificate=tls) for _ in range(count)]
        urls = [server.url("/") for server in servers]
    try:
        yield urls, lambda start, end: sum(server.hits_between(start, end) for server in servers)
    finally:
        for server in servers:
            server.close()


# --- CPU of a set of processes -----------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(parents.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


@dataclass
class Measured:
    cpu_s: float
    checks: int
    window_s: float

    @property
    def per_1k(self) -> float:
        return 1000 * self.cpu_s / self.checks if self.checks else float("nan")


def measure(pids: Callable[[], list[int]], count_checks: Callable[[float, float], int], window_s: float) -> Measured:
    processes = pids()
    start_cpu, start = cpu_seconds(processes), time.time()
    time.sleep(window_s)
    end_cpu, end = cpu_seconds(processes), time.time()
    return Measured(round(end_cpu - start_cpu, 2), count_checks(start, end), round(end - start, 1))


# --- our system --------------------------------------------------------------------------------------------


@dataclass
class Ours:
    stack: LocalStack
    metadata: tuple[tuple[str, str]]
    monitors: monitor_service_pb2_grpc.MonitorServiceStub
    notify: notification_service_pb2_grpc.NotificationServiceStub

    def pids(self) -> list[int]:
        return process_tree(self.stack.process.pid)

    def add_monitors(self, urls: list[str], interval_s: int, name: str) -> list[str]:
        ids = []
        for index, url in enumerate(urls):
            monitor = mpb.Monitor(
                display_name=f"{name} {index}",
                spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=url)),
                interval=duration_pb2.Duration(seconds=interval_s),
                timeout=duration_pb2.Duration(seconds=5),
                retries=0,
            )
            request = mpb.CreateMonitorRequest(monitor=monitor)
            ids.append(self.monitors.CreateMonitor(request, metadata=self.metadata, timeout=30).monitor.id)
        return ids

    def remove_monitors(self, ids: list[str]) -> None:
        for monitor_id in ids:
            self.monitors.DeleteMonitor(mpb.DeleteMonitorRequest(id=monitor_id), metadata=self.metadata, timeout=30)

    def wait_up(self, ids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for monitor_id in ids:
            while True:
                request = mpb.GetMonitorStatusRequest(id=monitor_id)
                status = self.monitors.GetMonitorStatus(request, metadata=self.metadata, timeout=10).status
                if status.state == common_pb2.MONITOR_STATE_UP:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"monitor {monitor_id} not UP within {timeout_s} s")
                time.sleep(0.2)


@contextmanager
def our_system(directory: Path, cert: Path, hook_url: str) -> Iterator[Ours]:
    extra = {"MONITORS_EGRESS": "private-allowed", "MONITORS_CA_FILE": str(cert)}
    directory.mkdir(parents=True, exist_ok=True)
    with (
        LocalStack.start(directory, extra) as stack,
        grpc.insecure_channel(stack.addresses["monitor"]) as monitor_channel,
        grpc.insecure_channel(stack.addresses["notify"]) as notify_channel,
    ):
        key = stack.admin("create-api-key", "--email", "compare@example.com")
        metadata = (("authorization", f"Bearer {key}"),)
        notify = notification_service_pb2_grpc.NotificationServiceStub(notify_channel)
        channel = npb.Channel(display_name="compare hook", webhook=npb.WebhookConfig(url=hook_url), is_default=True)
        notify.CreateChannel(npb.CreateChannelRequest(channel=channel), metadata=metadata, timeout=10)
        yield Ours(stack, metadata, monitor_service_pb2_grpc.MonitorServiceStub(monitor_channel), notify)


# --- the Prometheus stack ----------------------------------------------------------------------------------

PROMETHEUS = "/usr/bin/prometheus"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class PromStack:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{log.stem} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def alertmanager_config(hook_url: str, tuned: bool) -> dict[str, Any]:
    route: dict[str, Any] = {"receiver": "hook", "group_by": ["alertname", "instance"]}
    if tuned:
        route.update({"group_wait": "0s", "group_interval": "1s"})
    return {"route": route, "receivers": [{"name": "hook", "webhook_configs": [{"url": hook_url}]}]}


@contextmanager
def prometheus_stack(
    directory: Path, urls: list[str], interval_s: int, cert: Path, hook_urls: dict[str, str]
) -> Iterator[PromStack]:
    """prometheus probing ``urls`` through blackbox_exporter, with one Alertmanager per entry of
    ``hook_urls`` (``default`` and ``tuned``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stack = PromStack()
    logs: list[Any] = []

    def start(name: str, args: list[str], ready: str) -> None:
        log_path = directory / f"{name}.log"
        log = log_path.open("wb")
        logs.append(log)
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        stack.processes.append(process)
        wait_http(ready, process, log_path)

    try:
        blackbox_port = free_port()
        blackbox = {
            "modules": {
                "http_2xx": {
                    "prober": "http",
                    "timeout": "5s",
                    "http": {"preferred_ip_protocol": "ip4", "tls_config": {"ca_file": str(cert)}},
                }
            }
        }
        (directory / "blackbox.yml").write_text(json.dumps(blackbox))  # JSON is YAML
        start(
            "blackbox",
            [
                BLACKBOX,
                f"--config.file={directory / 'blackbox.yml'}",
                f"--web.listen-address=127.0.0.1:{blackbox_port}",
            ],
            f"http://127.0.0.1:{blackbox_port}/-/healthy",
        )
        alertmanagers = []
        for name, hook_url in hook_urls.items():
            port = free_port()
            config = directory / f"alertmanager-{name}.yml"
            config.write_text(json.dumps(alertmanager_config(hook_url, tuned=name == "tuned")))
            start(
                f"alertmanager-{name}",
                [
                    ALERTMANAGER,
                    f"--config.file={config}",
                    f"--storage.path={directory / f'am-{name}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                ],
                f"http://127.0.0.1:{port}/-/ready",
            )
            alertmanagers.append({"static_configs": [{"targets": [f"127.0.0.1:{port}"]}]})
        rules = {"groups": [{"name": "bench", "rules": [{"alert": "TargetDown", "expr": "probe_success == 0"}]}]}
        (directory / "rules.yml").write_text(json.dumps(rules))
        prometheus = {
            "global": {
                "scrape_interval": f"{interval_s}s",
                "evaluation_interval": f"{interval_s}s",
                "scrape_timeout": "5s",
            },
            "rule_files": [str(directory / "rules.yml")],
            "alerting": {"alertmanagers": alertmanagers},
            "scrape_configs": [
                {
                    "job_name": "blackbox",
                    "metrics_path": "/probe",
                    "params": {"module": ["http_2xx"]},
                    "static_configs": [{"targets": urls}],
                    "relabel_configs": [
                        {"source_labels": ["__address__"], "target_label": "__param_target"},
                        {"source_labels": ["__param_target"], "target_label": "instance"},
                        {"target_label": "__address__", "replacement": f"127.0.0.1:{blackbox_port}"},
                    ],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(prometheus))
        prometheus_port = free_port()
        start(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            f"http://127.0.0.1:{prometheus_port}/-/ready",
        )
        yield stack
    finally:
        for process in reversed(stack.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in logs:
            log.close()


# --- alert receivers ---------------------------------------------------------------------------------------


class AlertmanagerHook:
    """Alertmanager's webhook: logs when each instance was first posted as firing and as resolved."""

    def __init__(self) -> None:
        self.firing: dict[str, float] = {}
        self.resolved: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        arrived = time.time()
        payload = json.loads(body)
        with self._lock:
            for alert in payload.get("alerts", []):
                instance = alert.get("labels", {}).get("instance", "")
                seen = self.firing if alert.get("status") == "firing" else self.resolved
                seen.setdefault(instance, arrived)
        return Reply(200, b"ok")

    def wait(self, kind: str, instance: str, timeout_s: float) -> float | None:
        seen = self.firing if kind == "firing" else self.resolved
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if instance in seen:
                    return seen[instance]
            time.sleep(0.01)
        return None


def our_alert(receiver: WebhookReceiver, kind: str, monitor_id: str, since: float, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for hook in list(receiver.received):
            if hook.time >= since and hook.body.get("kind") == kind and monitor_id in json.dumps(hook.body):
                return hook.time
        time.sleep(0.01)
    return None


# --- the run -----------------------------------------------------------------------------------------------


def run_cpu(directory: Path, args: argparse.Namespace, cert: tuple[Path, Path], hook_url: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    warmup_s = 2 * args.interval
    with our_system(directory / "ours", cert[0], hook_url) as ours:
        for phase in PHASES:
            with targets_for(phase, args.targets, cert) as (urls, count):
                ids = ours.add_monitors(urls, args.interval, phase)
                time.sleep(warmup_s)
                measured = measure(ours.pids, count, args.window)
                ours.remove_monitors(ids)
            figures[f"ours_{phase}"] = measured
            print(f"ours {phase}: {measured}", file=sys.stderr, flush=True)
    for phase in PHASES:
        with (
            targets_for(phase, args.targets, cert) as (urls, count),
            prometheus_stack(directory / f"prom-{phase}", urls, args.interval, cert[0], {}) as prom,
        ):
            time.sleep(warmup_s)
            measured = measure(prom.pids, count, args.window)
        figures[f"prom_{phase}"] = measured
        print(f"prometheus {phase}: {measured}", file=sys.stderr, flush=True)
    return figures


def run_detection(
    directory: Path, args: argparse.Namespace, cert: tuple[Path, Path], hooks: HttpServer, receiver: WebhookReceiver
) -> dict[str, list[float]]:
    rng = random.Random(args.seed)
    am_hooks = {"default": AlertmanagerHook(), "tuned": AlertmanagerHook()}
    plain = HttpServer()
    with ExitStack() as stack:
        stack.enter_context(plain)
        for name, hook in am_hooks.items():
            plain.routes[f"/{name}"] = hook
        targets = [TargetServer(close=False, certificate=None) for _ in range(args.trials)]
        for target in targets:
            stack.callback(target.close)
        urls = [target.url("/") for target in targets]
        ours = stack.enter_context(our_system(directory / "detect", cert[0], hooks.url("/hook")))
        ids = ours.add_monitors(urls, args.interval, "flaky")
        ours.wait_up(ids, timeout_s=6 * args.interval + 30)
        hook_urls = {name: plain.url(f"/{name}") for name in am_hooks}
        stack.enter_context(prometheus_stack(directory / "prom-detect", urls, args.interval, cert[0], hook_urls))
        time.sleep(2 * args.interval)  # every target probed healthy at least once
        found: dict[str, list[float]] = {"ours": [], "prom_default": [], "prom_tuned": [], "ours_resolve": []}
        found["prom_tuned_resolve"] = []
        limit = 3 * args.interval + 60
        for number, (target, url, monitor_id) in enumerate(zip(targets, urls, ids, strict=True), start=1):
            time.sleep(rng.uniform(0, args.interval))
            t0 = time.time()
            target.failing = True
            ours_fired = our_alert(receiver, "alert_firing", monitor_id, t0, limit)
            tuned = am_hooks["tuned"].wait("firing", url, limit)
            default = am_hooks["default"].wait("firing", url, limit)
            target.failing = False
            t1 = time.time()
            ours_resolved = our_alert(receiver, "alert_resolved", monitor_id, t1, limit)
            tuned_resolved = am_hooks["tuned"].wait("resolved", url, limit)
            for name, moment, since in (
                ("ours", ours_fired, t0),
                ("prom_tuned", tuned, t0),
                ("prom_default", default, t0),
                ("ours_resolve", ours_resolved, t1),
                ("prom_tuned_resolve", tuned_resolved, t1),
            ):
                if moment is not None:
                    found[name].append(round(moment - since, 2))
            print(f"trial {number}: " + ", ".join(f"{k} {v[-1:]}" for k, v in found.items()), file=sys.stderr)
    return found


def p99(values: list[float]) -> float | None:
    return round(nearest_rank(values, 0.99), 2) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", type=int, default=1000, help="HTTP targets (1,000 at 10 s: 100 checks a second)")
    parser.add_argument("--interval", type=int, default=10, help="check interval, seconds (ours allows >= 10)")
    parser.add_argument("--window", type=float, default=60, help="CPU measuring window per phase, seconds")
    parser.add_argument("--trials", type=int, default=5, help="failing-target trials")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-detect", action="store_true")
    args = parser.parse_args()
    for binary in (PROMETHEUS, BLACKBOX, ALERTMANAGER):
        if not shutil.which(binary):
            sys.exit(f"{binary} is missing: run scripts/ensure-compare-packages.sh")
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="compare-") as name:
        directory = Path(name)
        cert = self_signed_certificate(directory)
        receiver = WebhookReceiver()
        with HttpServer(cert) as hooks:
            hooks.routes["/hook"] = receiver
            cpu = {} if args.skip_cpu else run_cpu(directory, args, cert, hooks.url("/hook"))
            detect = {} if args.skip_detect else run_detection(directory, args, cert, hooks, receiver)
    figures = summarise(args, cpu, detect)
    figures["load_average_before"] = [round(x, 2) for x in load_before]
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["run_s"] = round(time.time() - started)
    figures["cpus"] = os.cpu_count()
    figures["python"] = platform.python_version()
    figures["versions"] = versions()
    write_results(figures)


def summarise(args: argparse.Namespace, cpu: dict[str, Measured], detect: dict[str, list[float]]) -> dict[str, Any]:
    def per_1k(key: str) -> float | None:
        return round(cpu[key].per_1k, 3) if key in cpu else None

    figures: dict[str, Any] = {
        "targets": args.targets,
        "check_interval_s": args.interval,
        "window_s": args.window,
        "cpu_per_1k_checks_ours_s": per_1k("ours_keepalive"),
        "cpu_per_1k_checks_prom_s": per_1k("prom_keepalive"),
        "cpu_per_1k_fresh_checks_ours_s": per_1k("ours_fresh"),
        "cpu_per_1k_fresh_checks_prom_s": per_1k("prom_fresh"),
        "cpu_per_1k_fresh_tls_checks_ours_s": per_1k("ours_fresh_tls"),
        "cpu_per_1k_fresh_tls_checks_prom_s": per_1k("prom_fresh_tls"),
        "detect_p99_ours_s": p99(detect.get("ours", [])),
        "detect_p99_prom_default_s": p99(detect.get("prom_default", [])),
        "detect_p99_prom_tuned_s": p99(detect.get("prom_tuned", [])),
        "resolve_p99_ours_s": p99(detect.get("ours_resolve", [])),
        "resolve_p99_prom_tuned_s": p99(detect.get("prom_tuned_resolve", [])),
    }
    for phase in PHASES:
        figures[f"cpu_ratio_{phase}_ours_over_prom"] = ratio(per_1k(f"ours_{phase}"), per_1k(f"prom_{phase}"))
    figures["detect_prom_default_over_ours"] = ratio(figures["detect_p99_prom_default_s"], figures["detect_p99_ours_s"])
    figures["cpu_phases"] = {key: vars(value) for key, value in cpu.items()}
    figures["detect_trials_s"] = detect
    return figures


def versions() -> dict[str, str]:
    found = {}
    for name, binary in (("prometheus", PROMETHEUS), ("blackbox_exporter", BLACKBOX), ("alertmanager", ALERTMANAGER)):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        found[name] = (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) else "?"
    return found


def write_results(figures: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / "compare.md").write_text(markdown(figures))
    chart(figures, RESULTS / "compare.png")
    print(json.dumps(figures, indent=2))


def cell(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown(f: dict[str, Any]) -> str:
    rows = [
        ("CPU s per 1,000 checks, keep-alive to one origin", "cpu_per_1k_checks_ours_s", "cpu_per_1k_checks_prom_s"),
        (
            "CPU s per 1,000 checks, fresh connection",
            "cpu_per_1k_fresh_checks_ours_s",
            "cpu_per_1k_fresh_checks_prom_s",
        ),
        (
            "CPU s per 1,000 checks, fresh TLS connection",
            "cpu_per_1k_fresh_tls_checks_ours_s",
            "cpu_per_1k_fresh_tls_checks_prom_s",
        ),
        ("failure -> alert webhook p99 (s), Alertmanager defaults", "detect_p99_ours_s", "detect_p99_prom_default_s"),
        ("failure -> alert webhook p99 (s), Alertmanager tuned", "detect_p99_ours_s", "detect_p99_prom_tuned_s"),
        ("recovery -> resolved webhook p99 (s), tuned", "resolve_p99_ours_s", "resolve_p99_prom_tuned_s"),
    ]
    lines = [
        "# Ours vs Prometheus + blackbox_exporter + Alertmanager",
        "",
        f"{f['targets']} HTTP targets every {f['check_interval_s']} s; CPU over {f['window_s']:g} s windows; "
        f"{f['cpus']} CPUs, load average {f['load_average_before']} before, {f['load_average_after']} after. "
        "`make bench-compare` (bench/compare.py) wrote this.",
        "",
        "| figure | ours | Prometheus stack | ours / theirs |",
        "|---|---|---|---|",
    ]
    for label, ours_key, prom_key in rows:
        ours, prom = f.get(ours_key), f.get(prom_key)
        lines.append(f"| {label} | {cell(ours)} | {cell(prom)} | {cell(ratio(ours, prom))} |")
    lines += ["", "Versions: " + ", ".join(f"{k} `{v}`" for k, v in f["versions"].items()), ""]
    return "\n".join(lines)


def chart(f: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = ["keep-alive", "fresh", "fresh TLS"]
    ours = [
        f.get(k) or 0
        for k in ("cpu_per_1k_checks_ours_s", "cpu_per_1k_fresh_checks_ours_s", "cpu_per_1k_fresh_tls_checks_ours_s")
    ]
    prom = [
        f.get(k) or 0
        for k in ("cpu_per_1k_checks_prom_s", "cpu_per_1k_fresh_checks_prom_s", "cpu_per_1k_fresh_tls_checks_prom_s")
    ]
    xs = range(len(labels))
    left.bar([x - 0.2 for x in xs], ours, 0.4, label="ours")
    left.bar([x + 0.2 for x in xs], prom, 0.4, label="Prometheus stack")
    left.set_xticks(list(xs), labels)
    left.set_ylabel("CPU seconds per 1,000 checks")
    left.set_title(f"{f['targets']} targets every {f['check_interval_s']} s")
    left.legend()
    names = ["ours", "AM tuned", "AM defaults"]
    values = [f.get(k) or 0 for k in ("detect_p99_ours_s", "detect_p99_prom_tuned_s", "detect_p99_prom_default_s")]
    right.barh(names, values, color=["tab:blue", "tab:orange", "tab:red"])
    right.axvline(f["check_interval_s"] + 1, color="grey", linestyle="--", label="interval + 1 s")
    right.set_xlabel("failure -> alert webhook, p99 seconds")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
