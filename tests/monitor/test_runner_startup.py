"""A runner refuses, in one line and exit code 2, what would otherwise go wrong silently: a second runner on
the health port of a first, and a production runner with no runners' token (it would be refused by the monitor
service forever)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from harness import dying_with_parent
from harness.services import MODULES, REPO, free_port, python_env


def run_runner(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dying_with_parent([sys.executable, "-m", MODULES["runner"]]),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_runner_on_a_health_port_in_use_exits_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = python_env(
            {
                "MONITORS_DATA_DIR": str(tmp_path),
                "MONITORS_RUNNER_TOKEN": "runner-startup-test-token",
                "MONITORS_RUNNER_LISTEN": address,
                "MONITORS_MONITOR_TARGET": f"127.0.0.1:{free_port()}",
            }
        )

        result = run_runner(env)

    assert result.returncode == 2, result.stderr
    assert f"{address} (MONITORS_RUNNER_LISTEN) is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_runner_with_no_runner_token_to_use_exits(tmp_path: Path) -> None:
    """No MONITORS_RUNNER_TOKEN and no runners' token in the data directory (a runner on a machine of its own):
    before, it made a token of its own and was refused UNAUTHENTICATED forever."""
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_RUNNER_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_MONITOR_TARGET": f"127.0.0.1:{free_port()}",
        }
    )

    result = run_runner(env)

    assert result.returncode == 2, result.stderr
    assert "MONITORS_RUNNER_TOKEN is not set" in result.stderr
    assert not any(tmp_path.iterdir())  # it made no token of its own


def test_a_runner_given_a_database_url_but_no_runner_token_exits(tmp_path: Path) -> None:
    env = python_env(
        {
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_DATABASE_URL": "mysql+pymysql://monitors@127.0.0.1:1/monitors",
            "MONITORS_RUNNER_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_MONITOR_TARGET": f"127.0.0.1:{free_port()}",
        }
    )

    result = run_runner(env)

    assert result.returncode == 2, result.stderr
    assert "MONITORS_RUNNER_TOKEN must be set" in result.stderr
