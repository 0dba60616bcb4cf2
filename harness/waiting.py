"""Waiting in tests for something that happens in another process or thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], timeout_s: float = 20.0, interval_s: float = 0.1, what: str = "condition"
) -> T:
    """``probe()`` once it returns something truthy; fails naming ``what`` and the last value after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s: last {value!r}")
        time.sleep(interval_s)
