"""`python -m services.admin doctor`: checks every dependency the current settings name, one line each.

With the same environment as the services (MONITORS_*), it asks each dependency what the services will ask of
it: the database answers and every service's migrations are at their head; Redis answers PING; InfluxDB takes
a write and answers a query; the email provider accepts its credentials (SendGrid: the key may send mail; SMTP:
the server greets, and takes STARTTLS and the login when the URL asks for them); with MONITORS_RUNTIME=kubernetes,
the Kubernetes API lists the runners' StatefulSets, pods and dedicated Deployments with the service's account;
and each service answers gRPC health SERVING. Each check has its own timeout, and they run together. The command
exits 1 when one fails (a warning, such as no email provider, does not fail it).
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
import httpx
import orjson
import redis.asyncio
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from service_runtime.database import create_sync_engine, describe_url
from service_runtime.settings import ServiceName, Settings, target_of
from service_runtime.timeseries import influx_config
from service_runtime.tls import open_channel
from services.monitor_svc.accounts.login import LoginLimits
from services.monitor_svc.fleet.kubernetes import RUNNER_SELECTOR, open_kubernetes_runners
from services.monitor_svc.fleet.port import PlatformError
from services.monitor_svc.runner.settings import RunnerSettings
from services.notify_svc.settings import NotifySettings

TIMEOUT_S = 5.0
SERVICES_DIR = Path(__file__).resolve().parent
# Each service migrates its own tables (its own Alembic history) in the database its settings name.
MIGRATED: tuple[ServiceName, ...] = ("monitor", "alert", "notify")
# A point the InfluxDB check writes and reads back (measurement of its own: no query of ours reads it).
DOCTOR_MEASUREMENT = "monitors_doctor"

Outcome = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Finding:
    """What one check found: ``FAIL`` fails the command, ``warn`` does not."""

    check: str
    outcome: Outcome
    detail: str

    def line(self) -> str:
        return f"{self.outcome:<4}  {self.check:<22}  {self.detail}"


def _reason(error: BaseException) -> str:
    """One line for an error: its own words, not a traceback."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None and error.orig.args:
        return str(error.orig.args[-1])
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    text = (str(error) or type(error).__name__).splitlines()[0]
    # The system's words first ("Connection refused"), where a library wrapped them in its own ("Error 111 ...").
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno:
        words = os.strerror(cause.errno)
        if words.lower() not in text.lower():
            return f"{words} ({text})"
    return text


async def _guarded(check: str, work: Awaitable[Finding | list[Finding]]) -> Finding | list[Finding]:
    """``work``'s findings, or a FAIL naming the error it raised or its timeout."""
    try:
        return await asyncio.wait_for(work, TIMEOUT_S * 2)
    except TimeoutError:
        return Finding(check, "FAIL", f"no answer within {TIMEOUT_S * 2:.0f} s")
    except Exception as error:  # noqa: BLE001 - every failure is a finding, in one line
        return Finding(check, "FAIL", _reason(error))


def _sqlite_file_missing(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist yet (connecting would create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def database_answers(url: str, check: str = "database") -> Finding:
    missing = _sqlite_file_missing(url)
    if missing is not None:
        return Finding(check, "FAIL", f"{missing} does not exist (the services make it on their first start)")
    engine = create_sync_engine(url)
    try:
        started = time.monotonic()
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        elapsed_ms = (time.monotonic() - started) * 1000
    finally:
        engine.dispose()
    return Finding(check, "ok", f"{describe_url(url)} answers ({elapsed_ms:.0f} ms)")


def migrations_at_head(service: ServiceName, url: str) -> Finding:
    check = f"migrations ({service})"
    if _sqlite_file_missing(url) is not None:
        return Finding(check, "FAIL", f"no database yet: start the {service} service once (it migrates on start)")
    script = ScriptDirectory(str(SERVICES_DIR / f"{service}_svc" / "migrations"))
    heads = set(script.get_heads())
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            current = set(
                MigrationContext.configure(
                    connection, opts={"version_table": f"alembic_version_{service}"}
                ).get_current_heads()
            )
    finally:
        engine.dispose()
    if current == heads:
        return Finding(check, "ok", f"at head {', '.join(sorted(heads))}")
    found = ", ".join(sorted(current)) or "none applied"
    return Finding(
        check,
        "FAIL",
        f"at {found}, head is {', '.join(sorted(heads))}: start the {service} service of this version (it migrates"
        " on start)",
    )


async def redis_answers(url: str) -> Finding:
    client = redis.asyncio.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    shown = describe_url(url)
    try:
        await client.ping()
    except Exception as error:  # noqa: BLE001 - redis-py's connection and protocol errors alike
        return Finding("redis", "FAIL", f"{shown}: {_reason(error)}")
    finally:
        await client.aclose()
    return Finding("redis", "ok", f"{shown} answers PING")


async def influxdb_writes_and_reads(url: str) -> list[Finding]:
    """Write one point where the services write samples, then read it back with a query."""
    config = influx_config(url)
    headers = {"Authorization": f"Token {config.token}"} if config.token else {}
    auth = (config.username, config.password) if config.username else None
    where = f"{config.url}/{config.database}"
    async with httpx.AsyncClient(base_url=config.url, headers=headers, auth=auth, timeout=TIMEOUT_S) as http:
        try:
            reply = await http.post(
                "/write",
                params={"db": config.database, "rp": config.retention_policy, "precision": "s"},
                content=f"{DOCTOR_MEASUREMENT} ok=1i {int(time.time())}",
            )
        except httpx.HTTPError as error:
            failure = f"{where}: {type(error).__name__} {error}".rstrip()
            return [Finding("influxdb write", "FAIL", failure), Finding("influxdb query", "FAIL", failure)]
        if reply.status_code == 204:
            write = Finding(
                "influxdb write", "ok", f"{where} (retention policy {config.retention_policy}) took a point"
            )
        else:
            hint = " (the monitor service creates it at start)" if reply.status_code == 404 else ""
            write = Finding("influxdb write", "FAIL", f"{where}: HTTP {reply.status_code} {reply.text[:200]}{hint}")
        try:
            answer = await http.post(
                "/query",
                data={
                    "db": config.database,
                    "q": f'SELECT last("ok") FROM "{config.retention_policy}"."{DOCTOR_MEASUREMENT}"',
                },
            )
        except httpx.HTTPError as error:
            return [write, Finding("influxdb query", "FAIL", f"{where}: {type(error).__name__} {error}".rstrip())]
    if answer.status_code != 200:
        return [write, Finding("influxdb query", "FAIL", f"{where}: HTTP {answer.status_code} {answer.text[:200]}")]
    results = orjson.loads(answer.content).get("results", [{}])
    if results and "error" in results[0]:
        return [write, Finding("influxdb query", "FAIL", f"{where}: {results[0]['error']}")]
    read_back = bool(results and results[0].get("series"))
    if write.outcome == "ok" and not read_back:
        return [write, Finding("influxdb query", "FAIL", f"{where}: answered, without the point just written")]
    return [write, Finding("influxdb query", "ok", f"{where} answers queries")]


async def sendgrid_key_may_send(api_key: str, host: str) -> Finding:
    """SendGrid's scopes of the key (GET /v3/scopes): refused, or without mail.send, it cannot send."""
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        reply = await http.get(f"{host.rstrip('/')}/v3/scopes", headers={"Authorization": f"Bearer {api_key}"})
    if reply.status_code in (401, 403):
        return Finding("email (sendgrid)", "FAIL", f"{host} refused the key (HTTP {reply.status_code})")
    if reply.status_code != 200:
        return Finding("email (sendgrid)", "FAIL", f"{host} answered HTTP {reply.status_code}")
    scopes = orjson.loads(reply.content).get("scopes", [])
    if "mail.send" not in scopes:
        return Finding("email (sendgrid)", "FAIL", f"{host}: the key is valid but may not send mail (no mail.send)")
    return Finding("email (sendgrid)", "ok", f"{host} accepts the key, which may send mail")


def smtp_accepts(url: str) -> Finding:
    """Greeting, EHLO, STARTTLS and login as the URL asks (as the notification service's sender does), then QUIT."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or (465 if parts.scheme == 'smtps' else 25)}"
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        return Finding("email (smtp)", "FAIL", "MONITORS_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    starttls = parse_qs(parts.query).get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    try:
        done = _smtp_session(parts.hostname, port, parts.scheme == "smtps", starttls, parts.username, parts.password)
    except (OSError, smtplib.SMTPException) as error:
        return Finding("email (smtp)", "FAIL", f"{shown}: {_reason(error)}")
    return Finding("email (smtp)", "ok", f"{shown} {done}")


def _smtp_session(host: str, port: int, tls: bool, starttls: bool, user: str | None, password: str | None) -> str:
    server: smtplib.SMTP = (
        smtplib.SMTP_SSL(host, port, timeout=TIMEOUT_S, context=ssl.create_default_context())
        if tls
        else smtplib.SMTP(host, port, timeout=TIMEOUT_S)
    )
    try:
        server.ehlo()
        if starttls:
            server.starttls(context=ssl.create_default_context())
            server.ehlo()
        if user:
            server.login(unquote(user), unquote(password or ""))
    finally:
        try:
            server.quit()
        except (OSError, smtplib.SMTPException):
            server.close()
    return "logged in" if user else "greets (no login asked)"


async def email_provider(settings: Settings, own: NotifySettings) -> Finding:
    if own.sendgrid_api_key:
        return await sendgrid_key_may_send(own.sendgrid_api_key, own.sendgrid_host)
    if own.smtp_url:
        return await asyncio.to_thread(smtp_accepts, own.smtp_url)
    outbox = settings.data_dir / "outbox.txt"
    if settings.embedded:
        return Finding("email", "ok", f"no provider: emails go to {outbox} (embedded)")
    return Finding(
        "email", "warn", f"no provider (MONITORS_SENDGRID_API_KEY or MONITORS_SMTP_URL): emails go to {outbox}"
    )


def embedded_timeseries(url: str) -> Finding:
    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        return Finding("time series", "FAIL", f"{path} does not exist (the monitor service makes it at start)")
    return Finding("time series", "ok", f"embedded, {path}")


async def kubernetes_runners(settings: Settings) -> Finding:
    """The Kubernetes API answers the monitor service's account as the runner fleet asks it (MONITORS_RUNTIME=
    kubernetes): it lists the runner StatefulSets (at least one), their pods and the dedicated runners."""
    platform = open_kubernetes_runners(settings)
    try:
        runner_sets = await platform.runner_sets()
        pods = await platform.runner_pods()
        dedicated = await platform.dedicated_runners()
    except PlatformError as error:
        return Finding("kubernetes", "FAIL", str(error))
    finally:
        await platform.close()
    where = f"namespace {platform.namespace}"
    if not runner_sets:
        return Finding("kubernetes", "FAIL", f"{where}: no runner StatefulSet (labelled {RUNNER_SELECTOR}) to scale")
    locations = ", ".join(f"{s.location} ({s.replicas})" for s in sorted(runner_sets, key=lambda s: s.location))
    ready = sum(pod.ready for pod in pods)
    return Finding(
        "kubernetes",
        "ok",
        f"{where}: runners in {locations}; {len(pods)} runner pods, {ready} ready; {len(dedicated)} dedicated",
    )


async def serving(name: str, target: str, settings: Settings) -> Finding:
    check = f"{name} service"
    channel = open_channel(target, settings)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return Finding(check, "FAIL", f"{target}: {_reason(error)}")
    finally:
        await channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return Finding(check, "FAIL", f"{target} answers {status} (starting, or draining to stop)")
    return Finding(check, "ok", f"{target} SERVING")


async def examine(env: dict[str, str] | None = None) -> list[Finding]:
    """Every check the settings in ``env`` (default: this process's environment) call for, in a fixed order."""
    env = dict(os.environ) if env is None else env
    by_service = {service: Settings.from_env(service, env) for service in MIGRATED}
    # And each service's own knobs: a value its service would refuse at start is a configuration error here too.
    notify_own = NotifySettings.from_env(env)
    LoginLimits.from_env(env)
    RunnerSettings.from_env(env)
    settings = by_service["monitor"]
    checks: list[Awaitable[Finding | list[Finding]]] = []
    users: dict[str, list[str]] = {}  # database URL -> the services using it (embedded: one file each)
    for service, service_settings in by_service.items():
        users.setdefault(service_settings.database_url, []).append(service)
    for url, services in users.items():
        check = "database" if len(users) == 1 else f"database ({', '.join(services)})"
        checks.append(_guarded(check, asyncio.to_thread(database_answers, url, check)))
    for service, service_settings in by_service.items():
        work = asyncio.to_thread(migrations_at_head, service, service_settings.database_url)
        checks.append(_guarded(f"migrations ({service})", work))
    if settings.redis_url:
        checks.append(_guarded("redis", redis_answers(settings.redis_url)))
    if settings.timeseries_url.startswith("influxdb"):
        checks.append(_guarded("influxdb", influxdb_writes_and_reads(settings.timeseries_url)))
    else:
        checks.append(_guarded("time series", asyncio.to_thread(embedded_timeseries, settings.timeseries_url)))
    checks.append(_guarded("email", email_provider(by_service["notify"], notify_own)))
    if settings.runtime == "kubernetes":
        checks.append(_guarded("kubernetes", kubernetes_runners(settings)))
    targets = {
        "monitor": settings.monitor_target,
        "alert": target_of(env, "alert"),
        "notify": settings.notify_target,
    }
    for name, target in targets.items():
        checks.append(_guarded(f"{name} service", serving(name, target, settings)))
    findings: list[Finding] = []
    for result in await asyncio.gather(*checks):
        findings.extend(result if isinstance(result, list) else [result])
    return findings


def report(findings: Sequence[Finding]) -> tuple[str, int]:
    """The lines to print and the exit status: 1 when a check failed."""
    failed = [f for f in findings if f.outcome == "FAIL"]
    lines = [f.line() for f in findings]
    if failed:
        lines.append(f"{len(failed)} of {len(findings)} checks failed: {', '.join(f.check for f in failed)}")
    else:
        warnings = sum(1 for f in findings if f.outcome == "warn")
        lines.append(f"all {len(findings)} checks passed" + (f" ({warnings} with a warning)" if warnings else ""))
    return "\n".join(lines), 1 if failed else 0
