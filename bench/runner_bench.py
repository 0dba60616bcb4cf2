"""How many checks per second one runner sustains, and what each scheduled monitor costs it in memory.

Real processes throughout: a monitor service (embedded: SQLite, a temp data dir, MONITORS_MIN_INTERVAL_S=1,
INFO logs), a runner (``python -m services.monitor_svc.runner``, MONITORS_EGRESS=private-allowed) pinned to
CPU 0, and a local HTTP target: a minimal keep-alive HTTP/1.1 responder on uvloop (not http.server, so the
target is not what is measured). The monitor service, the target and this driver share CPU 1. Monitors are
created through the API (CreateMonitor, a bench user's API key from ``python -m services.admin``), all
website checks of ``http://127.0.0.1:<target>/``; each result travels back over ReportResults and is
recorded (a time-series sample and the monitor's status) as in production.

- ``checks_per_s``: monitors x 1/interval is the offered rate. For each rate on a ladder the runner is
  started afresh (its full sync spreads first runs over one interval), warms up for one stats period, then
  is measured over the next ``--window-periods`` periods. It reads the runner's own ``runner stats`` log
  line (checks done and schedule lag percentiles, every MONITORS_RUNNER_STATS_S). A rate is sustained when
  p99 schedule lag (the worst period's p99) stays under 1 s, the runner completes at least 97% of the offered
  checks, and its reporting keeps up (results waiting to be reported stay under two seconds' worth). Every
  check is verified against the target's own request count over the same window (within 2%). The ladder
  stops at the first rate that fails; the highest sustained rate is then measured ``--repeats`` times in
  all and the medians are reported (dropping one step unless most of those runs are sustained).
- ``bytes_per_monitor``: a fresh monitor service and runner; VmRSS of the runner with one monitor
  scheduled (and checked once, so pools and code paths are warm), then with 10,000 (hourly, each checked
  once and its result reported), the difference divided by the 9,999 added.

The machine has two cores shared with other work: figures vary from run to run; ``load_avg_1m`` is the
load when the run began. Writes ``bench/results/runner.json``.

    make bench     # or: .venv/bin/python -m bench.runner_bench [--interval-s 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
import uvloop
from google.protobuf import duration_pb2

from bench import write_figures
from harness.services import REPO, ServiceProcess, create_api_key, free_port, python_env
from monitors.v1 import common_pb2, monitor_service_pb2_grpc
from monitors.v1 import monitor_service_pb2 as pb

RESULTS = REPO / "bench" / "results" / "runner.json"
RUNNER_CPUS = {0}
OTHER_CPUS = {1}
MEMORY_MONITORS = 10_000
MAX_LAG_S = 1.0
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Counter(Protocol):
    value: int


# --- the HTTP target ----------------------------------------------------------------------------------


class _Responder(asyncio.Protocol):
    """Answers every request on a keep-alive connection with 200 "ok". The checks are GETs without a body,
    so a request ends at its blank line."""

    def __init__(self, served: Counter) -> None:
        self._served = served
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        requests = self._buffer.count(b"\r\n\r\n")
        if requests:
            self._buffer = self._buffer[self._buffer.rindex(b"\r\n\r\n") + 4 :]
            self._served.value += requests
            assert self._transport is not None
            self._transport.write(RESPONSE * requests)


def serve_target(port: int, served: Counter, cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Responder(served), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


# --- processes ----------------------------------------------------------------------------------------


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` (threads it starts later inherit it), as ``taskset -a -p`` does."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(process: ServiceProcess) -> int:
    assert process.process is not None
    return process.process.pid


def stats_lines(log_path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"runner stats"' in line:
            lines.append(json.loads(line))
    return lines


@dataclass
class Period:
    """One runner stats line, with the target's request count and process CPU times read as it appeared."""

    stats: dict[str, Any]
    served: int
    at: float
    runner_cpu_s: float
    service_cpu_s: float


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace, served: Counter, target_port: int) -> None:
        self.work = work
        self.args = args
        self.served = served
        self.url = f"http://127.0.0.1:{target_port}/"
        self.env = python_env(
            {
                "MONITORS_DATA_DIR": str(work / "data"),
                "MONITORS_LOG_LEVEL": "INFO",
                "MONITORS_MIN_INTERVAL_S": "1",
                "MONITORS_MAX_MONITORS_PER_USER": "100000",
                "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            }
        )
        self.service = ServiceProcess("monitor", self.env, work / "monitor.log")
        self.monitor_ids: list[str] = []
        self.runners = 0

    def start(self) -> None:
        self.service.start()
        self.key = create_api_key(self.env, "bench@example.com")

    def stop(self) -> None:
        self.service.stop()

    async def create_monitors(self, count: int, interval_s: int) -> None:
        """``count`` more website monitors of the target, 32 CreateMonitor calls in flight."""
        metadata = (("authorization", f"Bearer {self.key}"),)
        monitor = pb.Monitor(
            spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=self.url)),
            interval=duration_pb2.Duration(seconds=interval_s),
            timeout=duration_pb2.Duration(seconds=min(interval_s, 5)),
        )
        async with grpc.aio.insecure_channel(self.service.address) as channel:
            stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
            remaining = iter(range(count))

            async def worker() -> None:
                for _ in remaining:
                    request = pb.CreateMonitorRequest(monitor=monitor)
                    reply = await stub.CreateMonitor(request, metadata=metadata, timeout=30)
                    self.monitor_ids.append(reply.monitor.id)

            await asyncio.gather(*(worker() for _ in range(32)))

    async def delete_monitors(self, count: int) -> None:
        """Delete the ``count`` newest monitors, 32 DeleteMonitor calls in flight."""
        metadata = (("authorization", f"Bearer {self.key}"),)
        doomed = self.monitor_ids[-count:]
        del self.monitor_ids[-count:]
        async with grpc.aio.insecure_channel(self.service.address) as channel:
            stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
            remaining = iter(doomed)

            async def worker() -> None:
                for monitor_id in remaining:
                    await stub.DeleteMonitor(pb.DeleteMonitorRequest(id=monitor_id), metadata=metadata, timeout=30)

            await asyncio.gather(*(worker() for _ in range(32)))

    def runner(self, stats_s: float) -> ServiceProcess:
        self.runners += 1
        env = {
            **self.env,
            "MONITORS_MONITOR_TARGET": self.service.address,
            "MONITORS_EGRESS": "private-allowed",
            "MONITORS_RUNNER_ID": f"bench-{self.runners}",
            "MONITORS_RUNNER_STATS_S": str(stats_s),
        }
        return ServiceProcess("runner", env, self.work / f"runner-{self.runners}.log")

    async def periods(self, runner: ServiceProcess, count: int) -> list[Period]:
        """The next ``count`` stats lines of ``runner``, each stamped with the target's count as it appears."""
        seen = len(stats_lines(runner.log_path))
        found: list[Period] = []
        deadline = time.monotonic() + count * self.args.stats_s + 30
        while len(found) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"runner stats lines stopped:\n{runner.log_tail()}")
            await asyncio.sleep(0.02)
            lines = stats_lines(runner.log_path)
            for stats in lines[seen:]:
                found.append(
                    Period(
                        stats,
                        self.served.value,
                        time.monotonic(),
                        cpu_seconds(pid_of(runner)),
                        cpu_seconds(pid_of(self.service)),
                    )
                )
            seen = len(lines)
        return found[:count]

    async def trial(self, rate: int) -> dict[str, Any]:
        """Run ``rate`` checks/s (creating monitors as needed) through a fresh runner; its figures."""
        interval_s = self.args.interval_s
        wanted = rate * interval_s
        if wanted > len(self.monitor_ids):
            await self.create_monitors(wanted - len(self.monitor_ids), interval_s)
        elif wanted < len(self.monitor_ids):
            await self.delete_monitors(len(self.monitor_ids) - wanted)
        runner = self.runner(self.args.stats_s)
        runner.start(timeout_s=120)
        try:
            pin(pid_of(runner), RUNNER_CPUS)
            warm_up = await self.periods(runner, 1)
            window = await self.periods(runner, self.args.window_periods)
        finally:
            runner.stop()
        first = warm_up[-1]
        last = window[-1]
        seconds = last.at - first.at
        checks = sum(p.stats["checks"] for p in window)
        served = last.served - first.served
        offered = rate * len(window) * self.args.stats_s
        figures = {
            "rate": rate,
            "monitors": last.stats["monitors"],
            "checks_per_s": round(checks / (len(window) * self.args.stats_s), 1),
            "p99_lag_s": max(p.stats["lag_p99_s"] for p in window),
            "p50_lag_s": statistics.median(p.stats["lag_p50_s"] for p in window),
            "max_lag_s": max(p.stats["lag_max_s"] for p in window),
            "target_requests_per_s": round(served / seconds, 1),
            "reported_per_s": round((last.stats["reported"] - first.stats["reported"]) / seconds, 1),
            "queued_results": last.stats["queued_results"],
            "runner_cpu": round((last.runner_cpu_s - first.runner_cpu_s) / seconds, 3),
            "monitor_service_cpu": round((last.service_cpu_s - first.service_cpu_s) / seconds, 3),
        }
        if last.stats["monitors"] != wanted:
            raise RuntimeError(f"runner has {last.stats['monitors']} monitors, expected {wanted}")
        if abs(served - checks) > 0.02 * max(checks, 1) + 50:
            raise RuntimeError(f"runner counted {checks} checks but the target served {served}: {figures}")
        figures["sustained"] = (
            figures["p99_lag_s"] < MAX_LAG_S
            and checks >= 0.97 * offered
            and figures["queued_results"] <= 2 * rate
            and last.stats["dropped"] == 0
        )
        print(json.dumps(figures), file=sys.stderr, flush=True)
        return figures

    async def memory(self) -> dict[str, Any]:
        """RSS of a fresh runner with one hourly monitor, then with MEMORY_MONITORS."""
        stats_s = 2.0
        runner = self.runner(stats_s)
        await self.create_monitors(1, 3600)
        runner.start(timeout_s=120)
        try:
            pin(pid_of(runner), RUNNER_CPUS)
            # Assigned at start-up (a full sync), the monitor's first check is spread over its first minute.
            await self.until(runner, lambda s: s["reported"] >= 1, 90)
            before = await self.steady_rss(runner)
            await self.create_monitors(MEMORY_MONITORS - 1, 3600)
            await self.until(
                runner, lambda s: s["monitors"] == MEMORY_MONITORS and s["reported"] >= MEMORY_MONITORS, 300
            )
            after = await self.steady_rss(runner)
        finally:
            runner.stop()
        return {
            "bytes_per_monitor": round((after - before) / (MEMORY_MONITORS - 1)),
            "runner_rss_mb_1_monitor": round(before / 2**20, 1),
            "runner_rss_mb_10k_monitors": round(after / 2**20, 1),
        }

    async def until(self, runner: ServiceProcess, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(done(s) for s in stats_lines(runner.log_path)[-1:]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"runner did not get there in {timeout_s}s:\n{runner.log_tail()}")
            await asyncio.sleep(0.2)

    async def steady_rss(self, runner: ServiceProcess) -> int:
        """The median of five VmRSS readings a second apart."""
        readings = []
        for _ in range(5):
            await asyncio.sleep(1)
            readings.append(rss_bytes(pid_of(runner)))
        return int(statistics.median(readings))


async def throughput(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    trials: dict[int, list[dict[str, Any]]] = {}
    best = 0
    rate = args.start_rate
    while rate <= args.max_rate:
        trials[rate] = [await bench.trial(rate)]
        if not trials[rate][0]["sustained"]:
            break
        best = rate
        rate += args.step
    while best > 0:
        while len(trials[best]) < args.repeats:
            trials[best].append(await bench.trial(best))
        # Sustained in most runs (lag, completion and reporting alike), not merely a median lag under 1 s.
        if 2 * sum(bool(t["sustained"]) for t in trials[best]) > len(trials[best]):
            break
        best -= args.step
        trials.setdefault(best, [])
    if best <= 0:
        raise RuntimeError(f"no rate sustained: {trials}")
    runs = trials[best]

    def median(name: str) -> float:
        return round(statistics.median(float(t[name]) for t in runs), 4)

    return {
        "checks_per_s": median("checks_per_s"),
        "p99_lag_s": median("p99_lag_s"),
        "p50_lag_s": median("p50_lag_s"),
        "checks_per_s_runs": [t["checks_per_s"] for t in runs],
        "p99_lag_s_runs": [t["p99_lag_s"] for t in runs],
        "offered_rate_per_s": best,
        "first_failing_rate_per_s": best + args.step if best + args.step in trials else 0,
        "monitors": int(median("monitors")),
        "interval_s": args.interval_s,
        "target_requests_per_s": median("target_requests_per_s"),
        "reported_per_s": median("reported_per_s"),
        "runner_cpu": median("runner_cpu"),
        "monitor_service_cpu": median("monitor_service_cpu"),
        "window_s": args.window_periods * args.stats_s,
    }


async def measure(args: argparse.Namespace, served: Counter, target_port: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("throughput", "memory"):
            work = Path(tmp) / phase
            work.mkdir()
            bench = Bench(work, args, served, target_port)
            bench.start()
            try:
                pin(pid_of(bench.service), OTHER_CPUS)
                figures.update(await (throughput(bench, args) if phase == "throughput" else bench.memory()))
            finally:
                bench.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval-s", type=int, default=5, help="every monitor's interval in the rate ladder")
    parser.add_argument("--start-rate", type=int, default=500)
    parser.add_argument("--step", type=int, default=250)
    parser.add_argument("--max-rate", type=int, default=6000)
    parser.add_argument("--stats-s", type=float, default=10.0, help="the runner's stats period")
    parser.add_argument("--window-periods", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    os.sched_setaffinity(0, OTHER_CPUS)  # this driver and every process it starts, until pinned elsewhere
    context = multiprocessing.get_context("spawn")
    served = context.Value("Q", 0, lock=False)
    target_port = free_port()
    target = context.Process(target=serve_target, args=(target_port, served, OTHER_CPUS), daemon=True)
    target.start()
    try:
        figures = uvloop.run(measure(args, served, target_port))
    finally:
        target.terminate()
        target.join()
    figures.update(
        {
            "checks": "website GET of a local keep-alive HTTP/1.1 target, results reported and recorded",
            "runner_cpus": len(RUNNER_CPUS),
            "load_avg_1m": round(load, 2),
            "cpus": os.cpu_count() or 0,
            "python": platform.python_version(),
        }
    )
    write_figures(RESULTS, figures)


if __name__ == "__main__":
    main()
