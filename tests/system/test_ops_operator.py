"""What an operator needs to run production by hand: a master key from a command (and keys in the forms other
tools print), the role tokens each unit presents or accepts, no data directory relative to wherever a unit
starts, and a missing email provider said once at start."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from harness import dying_with_parent
from harness.external import MariaDBServer
from harness.services import MODULES, REPO, ServiceProcess, free_port, python_env, role_tokens_env
from monitors.v1 import notification_service_pb2 as pb
from monitors.v1 import notification_service_pb2_grpc
from service_runtime.secretbox import SecretBox, parse_master_keys
from service_runtime.settings import PRODUCTION_DATA_DIR, Settings

TOKENS = role_tokens_env("operator-test")
# SendNotification as the monitor service calls it for login codes.
MONITOR_SERVICE = (("authorization", f"Bearer {TOKENS['MONITORS_MONITOR_SERVICE_TOKEN']}"),)


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.admin", *args],
        env=python_env({}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_new_master_key_prints_a_key_the_services_accept() -> None:
    first, second = admin("new-master-key"), admin("new-master-key")
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout.count("\n") == 1
    assert first.stdout != second.stdout
    [key] = parse_master_keys(first.stdout.strip())
    assert len(key) == 32
    assert "MONITORS_MASTER_KEY" in admin("new-master-key", "--help").stdout


def test_master_keys_are_accepted_as_hex_and_standard_base64_too() -> None:
    """openssl rand -hex 32 and openssl rand -base64 32 print these; hex was refused ("got 48 bytes")."""
    key = os.urandom(32)
    sealed = SecretBox([key]).seal("v", "o", "n")
    for text in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        assert SecretBox(parse_master_keys(text)).open(sealed, "o", "n") == "v"


def test_a_production_data_directory_is_never_relative_to_the_working_directory(tmp_path: Path) -> None:
    production = Settings.from_env("notify", {"MONITORS_DATABASE_URL": "mysql+pymysql://u:p@db/monitors"})
    assert production.data_dir == Path(PRODUCTION_DATA_DIR)
    assert Settings.from_env("notify", {}).data_dir == Path(".data").resolve()  # embedded: beside make run
    chosen = {"MONITORS_DATABASE_URL": "mysql+pymysql://u:p@db/monitors", "MONITORS_DATA_DIR": str(tmp_path)}
    assert Settings.from_env("notify", chosen).data_dir == tmp_path


@pytest.mark.parametrize(
    ("name", "variables"),
    [
        ("monitor", "MONITORS_MONITOR_SERVICE_TOKEN, MONITORS_RUNNER_TOKEN and MONITORS_ALERT_SERVICE_TOKEN"),
        ("alert", "MONITORS_ALERT_SERVICE_TOKEN"),
        ("notify", "MONITORS_ALERT_SERVICE_TOKEN and MONITORS_MONITOR_SERVICE_TOKEN"),
    ],
)
def test_production_without_its_role_tokens_exits_naming_them(tmp_path: Path, name: str, variables: str) -> None:
    """Without them each unit had made its own tokens and its callers looped on UNAUTHENTICATED."""
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_DATABASE_URL": "mysql+pymysql://monitors:monitors@127.0.0.1:1/none",
            "MONITORS_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        }
    )
    result = subprocess.run(
        dying_with_parent([sys.executable, "-m", MODULES[name], "--listen", f"127.0.0.1:{free_port()}"]),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"{variables} must be set" in result.stderr
    assert not any(tmp_path.iterdir()), "the refused process wrote to its data directory"


def test_no_email_provider_in_production_is_one_warning_at_start(tmp_path: Path, mariadb: MariaDBServer) -> None:
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_DATABASE_URL": mariadb.create_database("operator_no_email"),
            "MONITORS_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            **TOKENS,
            "MONITORS_MONITOR_TARGET": f"127.0.0.1:{free_port()}",
            "MONITORS_LOG_FORMAT": "json",
        }
    )
    service = ServiceProcess("notify", env, tmp_path / "notify.log")
    service.start()
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
            for n in range(3):
                request = pb.SendNotificationRequest(
                    idempotency_key=f"operator-email-{n}",
                    email_address=f"someone{n}@example.com",
                    notification=pb.Notification(kind=pb.NOTIFICATION_KIND_LOGIN_CODE, login_code="424242"),
                )
                stub.SendNotification(request, metadata=MONITOR_SERVICE, timeout=5)
        outbox = tmp_path / "outbox.txt"
        deadline = time.monotonic() + 20
        while not (outbox.exists() and outbox.read_text().count("424242") == 3):
            assert time.monotonic() < deadline, "the emails never reached the outbox"
            time.sleep(0.1)
    finally:
        service.stop()
    lines = service.log_path.read_text().splitlines()
    warnings = [line for line in lines if '"level": "WARNING"' in line and "no email provider" in line]
    assert len(warnings) == 1
    assert "MONITORS_SMTP_URL" in warnings[0]
    assert str(outbox) in warnings[0]
    assert not [line for line in lines if "email written to the local outbox" in line]
