"""What a check returns: up or down, why, and the numbers it measured."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    is_up: bool
    duration_s: float
    error_class: str = ""
    message: str = ""
    fields: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def fail(error_class: str, message: str, started: float, fields: Mapping[str, float] | None = None) -> Outcome:
    """A down outcome, timed from ``started`` (a perf_counter reading)."""
    return Outcome(False, time.perf_counter() - started, error_class, message[:500], dict(fields or {}))
