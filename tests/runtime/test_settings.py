"""Settings come from the environment with documented defaults, and bad values fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from harness.services import REPO, free_port
from service_runtime.secretbox import new_master_key
from service_runtime.settings import ROLE_TOKENS, Role, Settings, SettingsError, target_of
from services.monitor_svc.accounts.login import LoginLimits
from services.monitor_svc.runner.settings import RunnerSettings
from services.notify_svc.settings import NotifySettings


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = Settings.from_env("alert", {"MONITORS_DATA_DIR": str(tmp_path)})
    assert settings.listen == "127.0.0.1:50052"
    assert settings.database_url == f"sqlite:///{tmp_path / 'alert.sqlite3'}"
    assert settings.timeseries_url == f"sqlite:///{tmp_path / 'timeseries.sqlite3'}"
    assert settings.redis_url == ""
    assert settings.monitor_target == "127.0.0.1:50051"
    assert settings.embedded


def test_each_service_has_its_default_port() -> None:
    ports = {s: Settings.from_env(s, {}).listen for s in ("monitor", "alert", "notify")}
    assert ports == {"monitor": "127.0.0.1:50051", "alert": "127.0.0.1:50052", "notify": "127.0.0.1:50053"}


def test_environment_and_flag_override() -> None:
    env = {"MONITORS_NOTIFY_LISTEN": "0.0.0.0:6000", "MONITORS_DATABASE_URL": "mysql+pymysql://u:p@db/monitors"}
    assert Settings.from_env("notify", env).listen == "0.0.0.0:6000"
    assert Settings.from_env("notify", env, listen="127.0.0.1:7000").listen == "127.0.0.1:7000"
    assert not Settings.from_env("notify", env).embedded


def test_a_services_address_follows_where_it_listens_unless_a_target_is_given() -> None:
    """On one machine, moving a service takes its *_LISTEN alone: the others (and the admin command's doctor)
    dial it there, a wildcard host as the loopback; an explicit *_TARGET wins (another machine, a Service)."""
    moved = {"MONITORS_MONITOR_LISTEN": "0.0.0.0:56051", "MONITORS_NOTIFY_LISTEN": "127.0.0.1:56053"}
    settings = Settings.from_env("alert", moved)
    assert (settings.monitor_target, settings.notify_target) == ("127.0.0.1:56051", "127.0.0.1:56053")
    assert target_of(moved, "alert") == "127.0.0.1:50052"
    assert target_of({"MONITORS_ALERT_LISTEN": "[::]:6002"}, "alert") == "[::1]:6002"
    given = {**moved, "MONITORS_MONITOR_TARGET": "monitor.monitors.svc:50051"}
    assert Settings.from_env("alert", given).monitor_target == "monitor.monitors.svc:50051"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MONITORS_MAX_MESSAGE_BYTES", "lots"),
        ("MONITORS_MAX_MESSAGE_BYTES", "10"),
        ("MONITORS_SHUTDOWN_GRACE_S", "-1"),
        ("MONITORS_LOG_LEVEL", "LOUD"),
        ("MONITORS_LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env("monitor", {name: value})


PRODUCTION = {"MONITORS_DATABASE_URL": "mysql+pymysql://u:p@db/monitors"}


def test_the_one_service_token_of_before_is_refused_naming_each_roles_token() -> None:
    """Read as a fallback it would open every internal RPC to whoever holds it, as before: a deployment still
    setting it is told what replaces it instead."""
    with pytest.raises(SettingsError) as raised:
        Settings.from_env("runner", {**PRODUCTION, "MONITORS_SERVICE_TOKEN": "the-old-shared-one"})
    message = str(raised.value)
    assert message.startswith("MONITORS_SERVICE_TOKEN is no longer read")
    for variable, _ in ROLE_TOKENS.values():
        assert variable in message


def test_two_roles_given_one_token_are_refused() -> None:
    env = {**PRODUCTION, "MONITORS_MASTER_KEY": new_master_key(), "MONITORS_RUNNER_TOKEN": "same"}
    env |= {"MONITORS_ALERT_SERVICE_TOKEN": "same", "MONITORS_MONITOR_SERVICE_TOKEN": "own"}
    with pytest.raises(SettingsError, match="MONITORS_RUNNER_TOKEN and MONITORS_ALERT_SERVICE_TOKEN hold the same"):
        Settings.from_env("monitor", env).check_before_serving()


def test_embedded_each_role_has_its_own_token_kept_in_the_data_directory(tmp_path: Path) -> None:
    monitor = Settings.from_env("monitor", {"MONITORS_DATA_DIR": str(tmp_path)})
    tokens = {role: monitor.role_token(role) for role in ("runner", "alert", "monitor", "operator")}
    assert len(set(tokens.values())) == 4
    runner = Settings.from_env("runner", {"MONITORS_DATA_DIR": str(tmp_path)})
    assert runner.role_token("runner") == tokens["runner"]  # the same file, read by every process
    assert (tmp_path / "runner-token").stat().st_mode & 0o777 == 0o600


def test_in_production_an_unset_operator_token_is_no_token_at_all() -> None:
    env = {**PRODUCTION, "MONITORS_RUNNER_TOKEN": "r-token", "MONITORS_OPERATOR_TOKEN": ""}
    settings = Settings.from_env("monitor", env)
    table: dict[str, tuple[Role, ...]] = {"/a": ("runner",), "/b": ("operator",)}
    assert settings.accepted_role_tokens(table) == {"r-token": "runner"}
    assert Settings.from_env("monitor", {**env, "MONITORS_OPERATOR_TOKEN": "o-token"}).accepted_role_tokens(table) == {
        "r-token": "runner",
        "o-token": "operator",
    }


def test_a_role_token_being_rotated_is_presented_new_and_accepted_new_or_old() -> None:
    env = {**PRODUCTION, "MONITORS_RUNNER_TOKEN": " new-token, old-token ", "MONITORS_ALERT_SERVICE_TOKEN": "a"}
    settings = Settings.from_env("monitor", env)
    assert settings.role_token("runner") == "new-token"
    table: dict[str, tuple[Role, ...]] = {"/watch": ("runner",), "/feed": ("alert",)}
    assert settings.accepted_role_tokens(table) == {"new-token": "runner", "old-token": "runner", "a": "alert"}


def test_an_old_token_of_one_role_may_not_be_another_roles() -> None:
    env = {**PRODUCTION, "MONITORS_MASTER_KEY": new_master_key(), "MONITORS_MONITOR_SERVICE_TOKEN": "m"}
    env |= {"MONITORS_RUNNER_TOKEN": "new,old", "MONITORS_ALERT_SERVICE_TOKEN": "old"}
    with pytest.raises(SettingsError, match="MONITORS_RUNNER_TOKEN and MONITORS_ALERT_SERVICE_TOKEN hold the same"):
        Settings.from_env("monitor", env).check_before_serving()


# Each service's own knobs: where each is read, and what a bad value does.
OWN_KNOBS = {
    "MONITORS_LOGIN_CODE_TTL_S": "soon",  # the monitor service's login limits
    "MONITORS_RUNNER_CONCURRENCY": "0",  # the runner's
    "MONITORS_NOTIFY_TIMEOUT_S": "-1",  # the notification service's
}


def test_a_services_own_knobs_are_read_by_that_service_alone() -> None:
    """Login limits and runner settings are the monitor service's, email and PagerDuty the notification
    service's: the shared settings of any service pass over them, and each is read (and refused, naming the
    variable) where it is used."""
    for service in ("monitor", "alert", "notify", "runner"):
        Settings.from_env(service, OWN_KNOBS)
    with pytest.raises(SettingsError, match="MONITORS_LOGIN_CODE_TTL_S"):
        LoginLimits.from_env(OWN_KNOBS)
    with pytest.raises(SettingsError, match="MONITORS_RUNNER_CONCURRENCY"):
        RunnerSettings.from_env(OWN_KNOBS)
    with pytest.raises(SettingsError, match="MONITORS_NOTIFY_TIMEOUT_S"):
        NotifySettings.from_env(OWN_KNOBS)


def test_own_knobs_keep_their_documented_defaults() -> None:
    login = LoginLimits.from_env({})
    assert (login.codes_per_address, login.codes_per_address_per_day) == (5, 20)
    assert (login.codes_per_client, login.attempts_per_client, login.code_ttl) == (20, 30, timedelta(minutes=10))
    runner = RunnerSettings.from_env({})
    assert (runner.location, runner.concurrency, runner.stats_interval_s) == ("local", 500, 60.0)
    assert (runner.monitor_id, runner.secrets_dir) == ("", None)
    assert NotifySettings.from_env({}) == NotifySettings(
        sendgrid_api_key="",
        sendgrid_host="https://api.sendgrid.com",
        smtp_url="",
        email_from="monitors@localhost",
        pagerduty_events_url="https://events.pagerduty.com/v2/enqueue",
        timeout_s=10.0,
    )
    given = {"MONITORS_LOGIN_CODES_PER_CLIENT": "7", "MONITORS_RUNNER_LOCATION": "eu", "MONITORS_SMTP_URL": "smtp://m"}
    assert LoginLimits.from_env(given).codes_per_client == 7
    assert RunnerSettings.from_env(given).location == "eu"
    assert NotifySettings.from_env(given).smtp_url == "smtp://m"


@pytest.mark.parametrize(
    ("module", "variable"),
    [
        ("services.monitor_svc", "MONITORS_LOGIN_CODE_TTL_S"),
        ("services.monitor_svc.runner", "MONITORS_RUNNER_CONCURRENCY"),
        ("services.notify_svc", "MONITORS_NOTIFY_TIMEOUT_S"),
    ],
)
def test_a_bad_own_knob_stops_its_service_before_it_touches_anything(
    tmp_path: Path, module: str, variable: str
) -> None:
    env = {
        **os.environ,
        "MONITORS_DATA_DIR": str(tmp_path),
        "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
        "MONITORS_RUNNER_TOKEN": "a-token",  # which a runner must have before it reads its own knobs
        variable: OWN_KNOBS[variable],
    }
    started = subprocess.run(
        [sys.executable, "-m", module, "--listen", f"127.0.0.1:{free_port()}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2, started.stderr
    assert started.stderr.startswith(f"configuration error: {variable} must be"), started.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no key, no token made
