"""`python -m services.admin doctor` against the harness's real MariaDB, Redis and InfluxDB and the three services
as real processes: every line ok when all is up; with Redis stopped, that line fails, names Redis's address and
why, the others stay ok, and the exit status is 1. SendGrid cannot run here: a local HTTP server answers its
scopes endpoint as SendGrid documents it. SMTP is aiosmtpd."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from harness.external import InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.http import HttpServer, Reply
from harness.services import REPO, Stack, free_port
from services import doctor

pytestmark = pytest.mark.production

SENDING_KEY = "SG.sending"
READ_ONLY_KEY = "SG.read-only"
EVERY_CHECK = {
    "database",
    "migrations (monitor)",
    "migrations (alert)",
    "migrations (notify)",
    "redis",
    "influxdb write",
    "influxdb query",
    "email (sendgrid)",
    "monitor service",
    "alert service",
    "notify service",
}


def _scopes(_path: str, headers: dict[str, str], _body: bytes) -> Reply:
    """GET /v3/scopes as SendGrid answers it: the key's scopes, or 401 for a key it does not know."""
    scopes = {
        f"Bearer {SENDING_KEY}": ["mail.send", "user.profile.read"],
        f"Bearer {READ_ONLY_KEY}": ["user.profile.read"],
    }.get(headers.get("authorization", ""))
    if scopes is None:
        return Reply.json({"errors": [{"field": None, "message": "authorization required"}]}, 401)
    return Reply.json({"scopes": scopes})


@pytest.fixture(scope="module")
def sendgrid() -> Iterator[HttpServer]:
    with HttpServer() as server:
        server.routes["/v3/scopes"] = _scopes
        yield server


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own, which a test stops (the session's is shared)."""
    with RedisServer(tmp_path_factory.mktemp("doctor-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    mariadb: MariaDBServer,
    own_redis: RedisServer,
    influxdb: InfluxDBServer,
    sendgrid: HttpServer,
) -> Iterator[Stack]:
    settings = production_env(mariadb, own_redis, influxdb, "doctor")
    settings |= {"MONITORS_SENDGRID_API_KEY": SENDING_KEY, "MONITORS_SENDGRID_HOST": sendgrid.url("").rstrip("/")}
    with Stack(tmp_path_factory.mktemp("doctor"), settings) as started:
        yield started


def run_doctor(stack: Stack) -> tuple[int, dict[str, tuple[str, str]], str]:
    """The command as an operator runs it, with the services' environment: exit status, findings by check
    (outcome, detail), and the summary line."""
    env = {**stack.env, "MONITORS_ALERT_TARGET": stack.address("alert")}
    result = subprocess.run(
        [sys.executable, "-m", "services.admin", "doctor"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    *lines, summary = result.stdout.strip().splitlines()
    findings = {}
    for line in lines:
        outcome, check, detail = line[:4].strip(), line[6:28].strip(), line[30:]
        findings[check] = (outcome, detail)
    return result.returncode, findings, summary


def test_doctor_says_ok_for_every_dependency_of_a_healthy_deployment(stack: Stack) -> None:
    status, findings, summary = run_doctor(stack)
    assert set(findings) == EVERY_CHECK
    assert {check: outcome for check, (outcome, _) in findings.items()} == dict.fromkeys(EVERY_CHECK, "ok")
    assert status == 0
    assert summary == f"all {len(EVERY_CHECK)} checks passed"
    assert findings["alert service"] == ("ok", f"{stack.address('alert')} SERVING")
    assert "***" in findings["database"][1]  # the password is not printed


def test_doctor_fails_naming_redis_when_redis_is_down_and_the_rest_stays_ok(
    stack: Stack, own_redis: RedisServer
) -> None:
    own_redis.stop()
    status, findings, summary = run_doctor(stack)
    outcome, detail = findings["redis"]
    assert outcome == "FAIL"
    assert detail.startswith(f"redis://127.0.0.1:{own_redis.port}/0: ")
    assert "refused" in detail.lower()
    assert {check for check, (outcome, _) in findings.items() if outcome != "ok"} == {"redis"}
    assert status == 1
    assert summary == f"1 of {len(EVERY_CHECK)} checks failed: redis"


async def test_doctor_finds_unmigrated_tables_a_missing_influx_database_and_services_not_running(
    mariadb: MariaDBServer, influxdb: InfluxDBServer, tmp_path: Path
) -> None:
    controller = Controller(object(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        env = {
            "MONITORS_DATABASE_URL": mariadb.create_database("doctor_fresh"),
            "MONITORS_TIMESERIES_URL": influxdb.url.replace("http://", "influxdb://") + "/never_created",
            "MONITORS_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_MONITOR_TARGET": f"127.0.0.1:{free_port()}",
            "MONITORS_ALERT_TARGET": f"127.0.0.1:{free_port()}",
            "MONITORS_NOTIFY_TARGET": f"127.0.0.1:{free_port()}",
        }
        findings = {f.check: f for f in await doctor.examine(env)}
    finally:
        controller.stop()
    assert findings["database"].outcome == "ok"
    for service in ("monitor", "alert", "notify"):
        assert findings[f"migrations ({service})"].outcome == "FAIL"
        assert findings[f"migrations ({service})"].detail.startswith("at none applied, head is ")
        assert findings[f"{service} service"].outcome == "FAIL"
        assert "UNAVAILABLE" in findings[f"{service} service"].detail
    assert findings["influxdb write"].outcome == "FAIL"
    assert "HTTP 404" in findings["influxdb write"].detail
    assert findings["email (smtp)"].outcome == "ok"
    assert "redis" not in findings  # the settings name no Redis


async def test_doctor_fails_a_sendgrid_key_that_is_refused_or_may_not_send(sendgrid: HttpServer) -> None:
    host = sendgrid.url("").rstrip("/")
    refused = await doctor.sendgrid_key_may_send("SG.unknown", host)
    assert (refused.outcome, refused.detail) == ("FAIL", f"{host} refused the key (HTTP 401)")
    read_only = await doctor.sendgrid_key_may_send(READ_ONLY_KEY, host)
    assert read_only.outcome == "FAIL"
    assert "may not send mail" in read_only.detail
    sending = await doctor.sendgrid_key_may_send(SENDING_KEY, host)
    assert sending.outcome == "ok"


def test_doctor_fails_an_smtp_server_that_does_not_answer_naming_it() -> None:
    port = free_port()
    finding = doctor.smtp_accepts(f"smtp://user:secret@127.0.0.1:{port}")
    assert finding.outcome == "FAIL"
    assert finding.detail.startswith(f"smtp://127.0.0.1:{port}: ")
    assert "refused" in finding.detail.lower()
