"""Test harness: throwaway real servers and our services as real processes."""

from __future__ import annotations

import shutil
from collections.abc import Sequence


def dying_with_parent(command: Sequence[str]) -> list[str]:
    """``command`` run so the kernel sends it SIGTERM when the test process dies (``setpriv --pdeathsig``,
    util-linux), so a killed or interrupted run leaves no mariadbd, redis-server, influxd or service behind.
    setpriv sets it and execs the command, so the pid is the server's own. (Not a ``preexec_fn``: code run
    between fork and exec in a process with threads can deadlock.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else list(command)
