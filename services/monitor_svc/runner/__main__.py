"""`python -m services.monitor_svc.runner [--listen HOST:PORT]`: check assigned monitors, report results.

Connects to MonitorService (MONITORS_MONITOR_TARGET) with the runner's token (MONITORS_RUNNER_TOKEN, or the
one in the data directory when embedded), which opens the runners' two RPCs and nothing else; holds no
database credentials. Serves the standard gRPC health
service on --listen (default 127.0.0.1:50054): SERVING once its first assignments have arrived. On SIGTERM it
stops checking and reports what it holds (within MONITORS_SHUTDOWN_GRACE_S) before it goes.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import REGISTRY

from service_runtime.metrics import MetricsEndpoint
from service_runtime.process import run_process, stop_signals
from service_runtime.settings import ROLE_TOKENS, Settings, SettingsError, StartupError
from service_runtime.tls import open_channel
from services.monitor_svc import VERSION
from services.monitor_svc.checks import Checker, check_config
from services.monitor_svc.runner.client import CHANNEL_OPTIONS, RunnerClient
from services.monitor_svc.runner.metrics import RunnerCollector
from services.monitor_svc.runner.scheduler import Scheduler
from services.monitor_svc.runner.settings import RunnerSettings

log = logging.getLogger("monitors.runner")


async def log_stats_forever(scheduler: Scheduler, client: RunnerClient, interval_s: float) -> None:
    """Every ``interval_s``, one line: checks done and schedule lag since the last line, and the report
    counters so far (operators see whether the runner keeps up; the runner benchmark reads it)."""
    while True:
        await asyncio.sleep(interval_s)
        stats = scheduler.take_stats()
        log.info(
            "runner stats",
            extra={
                "interval_s": interval_s,
                "checks": stats.checks,
                "down": stats.down,
                "lag_p50_s": round(stats.lag_p50_s, 4),
                "lag_p99_s": round(stats.lag_p99_s, 4),
                "lag_max_s": round(stats.lag_max_s, 4),
                "monitors": stats.monitors,
                "running": stats.running,
                "queued_results": scheduler.results.qsize(),
                "reported": client.reported,
                "rejected": client.rejected,
                "dropped": client.dropped + scheduler.dropped,
            },
        )


async def serve(settings: Settings) -> None:
    """Serve health, check the monitors assigned, report their results; on SIGTERM or SIGINT, stop gracefully."""
    runner = RunnerSettings.from_env(settings.env)  # first: a bad value stops the runner before anything
    stop = stop_signals()
    health = HealthServicer()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])  # a second runner on the port fails, not shares
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(settings.listen) == 0:
        raise StartupError(f"cannot listen on {settings.listen}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    checker = Checker(check_config(settings))
    scheduler = Scheduler(checker, runner.concurrency)

    async def synced() -> None:
        await health.set("", health_pb2.HealthCheckResponse.SERVING)

    client = RunnerClient(
        open_channel(settings.monitor_target, settings, CHANNEL_OPTIONS),
        settings.role_token("runner"),
        runner.runner_id,
        runner.location,
        scheduler,
        version=VERSION,
        on_synced=synced,
        dedicated_monitor_id=runner.monitor_id,
        secrets_dir=runner.secrets_dir,
    )
    metrics = MetricsEndpoint(settings.metrics_listen) if settings.metrics_listen else None
    if metrics is not None:
        REGISTRY.register(RunnerCollector(scheduler, client))
        metrics.start()
    log.info(
        "runner started",
        extra={
            "runner_id": runner.runner_id,
            "location": runner.location,
            "target": settings.monitor_target,
        },
    )
    scheduling = asyncio.create_task(scheduler.run_forever())
    tasks = [asyncio.create_task(client.watch_forever()), asyncio.create_task(client.report_forever())]
    if runner.stats_interval_s > 0:
        tasks.append(asyncio.create_task(log_stats_forever(scheduler, client, runner.stats_interval_s)))
    await stop.wait()
    await health.enter_graceful_shutdown()
    await stop_gracefully(scheduling, scheduler, client, settings.shutdown_grace_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    await checker.close()
    await server.stop(2)
    if metrics is not None:
        await asyncio.to_thread(metrics.stop)
    log.info("runner stopped", extra={"runner_id": runner.runner_id, "reported": client.reported})


async def stop_gracefully(
    scheduling: asyncio.Task[None], scheduler: Scheduler, client: RunnerClient, grace_s: float
) -> None:
    """Stop checking, give the checks under way up to half of ``grace_s`` to finish, then report what is held
    within what is left of it, while the assignment stream still names this runner as the monitors' owner (the
    monitor service refuses results of a runner that has gone). What cannot be reported in time is logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    scheduling.cancel()
    await asyncio.gather(scheduling, return_exceptions=True)
    await scheduler.close(wait_s=grace_s / 2)
    unreported = await client.finish(max(0.0, deadline - loop.time()))
    if unreported:
        log.warning("results not reported before the stop's deadline", extra={"lost": unreported, "grace_s": grace_s})


def require_runner_token(settings: Settings) -> None:
    """A runner takes the runners' token the monitor service accepts; it never makes one of its own."""
    variable, file = ROLE_TOKENS["runner"]
    if "runner" not in settings.role_tokens and not (settings.data_dir / file).exists():
        # A token made here would be the runner's own, which no monitor service knows: refused forever.
        raise SettingsError(
            f"{variable} is not set and {settings.data_dir / file} does not exist: give the runner the token"
            " the monitor service accepts from runners (embedded, start the monitor service first or share its"
            " MONITORS_DATA_DIR)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run a runner until SIGTERM or SIGINT (exit 2 on bad settings or a port in use)."""
    return run_process(
        "runner",
        serve,
        argv,
        prog="python -m services.monitor_svc.runner",
        label="runner",
        listen_help="health endpoint",
        check=require_runner_token,
    )


if __name__ == "__main__":
    sys.exit(main())
