"""How every process of the deployment starts and stops (the three services and the runner): its command line,
settings, logs, free ports, event loop, and the signals that stop it.

Apart from service_runtime/server.py, which serves RPCs: the runner serves none and must not load the storage
layers that the servers' plumbing brings in.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from service_runtime.logs import configure_logging
from service_runtime.ports import ensure_free
from service_runtime.settings import DEFAULT_LISTEN, ServiceName, Settings, SettingsError, StartupError


def stop_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets from now on. Taken before a process starts: a SIGTERM as soon as its
    health says SERVING (a probe's first pass, then a rollout) must drain, not meet the default action and kill
    the process mid-call."""
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, requested.set)
    return requested


def run_process(
    name: ServiceName,
    serve: Callable[[Settings], Coroutine[Any, Any, None]],
    argv: list[str] | None,
    *,
    prog: str,
    label: str,
    listen_help: str,
    check: Callable[[Settings], None] | None = None,
) -> int:
    """The ``__main__`` of every process (the services and the runner): parse ``--listen``, read the settings
    and check them (``check`` adds the process's own checks; exit 2 on a bad one), configure logs, make sure
    the process's ports are free (exit 2 naming ``label`` if not), then ``serve`` on uvloop (``serve`` reads the
    process's own knobs before anything else: a bad one is a configuration error too, exit 2)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument(
        "--listen", help=f"{listen_help} (default: $MONITORS_{name.upper()}_LISTEN or {DEFAULT_LISTEN[name]})"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(name, listen=args.listen)
        settings.check_before_serving()
        if check is not None:
            check(settings)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, name)
    try:
        for variable, address in settings.listeners().items():
            ensure_free(variable, address)
        # uvloop: measured on the unary benchmark, about 15% more calls per second than asyncio's own loop.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings))
    except SettingsError as error:  # the process's own knobs, which ``serve`` reads before anything else
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"{label} cannot start: {error}", file=sys.stderr)
        return 2
    return 0
