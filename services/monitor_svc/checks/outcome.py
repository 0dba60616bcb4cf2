"""What a check returns: up or down, why, and the numbers it measured."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.monitor_svc.domain import CheckResult


@dataclass(frozen=True)
class Outcome:
    is_up: bool
    duration_s: float
    error_class: str = ""
    message: str = ""
    fields: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def result(self, monitor_id: str, at: datetime) -> CheckResult:
        """This outcome as the check result of ``monitor_id``, started at ``at``."""
        return CheckResult(
            monitor_id=monitor_id,
            time=at,
            is_up=self.is_up,
            duration=timedelta(seconds=self.duration_s),
            error_class=self.error_class,
            message=self.message,
            fields=self.fields,
            tags=self.tags,
        )


def fail(error_class: str, message: str, started: float, fields: Mapping[str, float] | None = None) -> Outcome:
    """A down outcome, timed from ``started`` (a perf_counter reading)."""
    return Outcome(False, time.perf_counter() - started, error_class, message[:500], dict(fields or {}))
