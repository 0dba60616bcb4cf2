"""The runner's own settings (MONITORS_RUNNER_*), read beside the shared ones (service_runtime/settings.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service_runtime.settings import read_float, read_int


@dataclass(frozen=True)
class RunnerSettings:
    runner_id: str
    location: str
    concurrency: int  # checks in flight at once
    stats_interval_s: float  # how often the runner logs its checks and schedule lag (0: never)
    # A dedicated runner: the one monitor it checks, and the directory its secrets are mounted in (a file each).
    monitor_id: str = ""
    secrets_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunnerSettings:
        """The runner's settings in ``env``; SettingsError naming a variable whose value cannot be used."""
        secrets_dir = env.get("MONITORS_RUNNER_SECRETS_DIR", "")
        return cls(
            runner_id=env.get("MONITORS_RUNNER_ID") or f"{socket.gethostname()}-{os.getpid()}",
            location=env.get("MONITORS_RUNNER_LOCATION") or "local",
            concurrency=read_int(env, "MONITORS_RUNNER_CONCURRENCY", 500, minimum=1),
            stats_interval_s=read_float(env, "MONITORS_RUNNER_STATS_S", 60.0),
            monitor_id=env.get("MONITORS_RUNNER_MONITOR_ID", ""),
            secrets_dir=Path(secrets_dir) if secrets_dir else None,
        )
