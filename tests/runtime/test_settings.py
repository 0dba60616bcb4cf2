"""Settings come from the environment with documented defaults, and bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from service_runtime.settings import Settings, SettingsError, target_of


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
