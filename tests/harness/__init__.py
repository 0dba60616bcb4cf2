"""Test harness: throwaway real servers and our services as real processes."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for the servers we start: the kernel sends them SIGTERM when the test process dies, so a
    killed or interrupted run leaves no mariadbd, redis-server, influxd or service behind (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
