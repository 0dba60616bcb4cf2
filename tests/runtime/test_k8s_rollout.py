"""A rollout's SIGTERM can reach a server while it is still starting (Kubernetes sends it whenever it replaces a
pod): the server must then finish starting and drain, exiting 0, not meet SIGTERM's default action and die
mid-start. A real process: a ServiceHost whose start hook holds it inside start() until the test has signalled."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness.services import REPO, free_port, python_env

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from service_runtime.errors import Unauthenticated
    from service_runtime.server import ServiceHost
    from service_runtime.settings import Settings

    class NoOne:
        async def verify(self, token):
            raise Unauthenticated("no one")

    async def main() -> None:
        starting, signalled = Path(sys.argv[1]), Path(sys.argv[2])
        settings = Settings.from_env("notify", {"MONITORS_DRAIN_DELAY_S": "0"}, listen=sys.argv[3])
        host = ServiceHost(settings, [], NoOne())

        async def hold_until_signalled() -> None:
            starting.touch()
            while not signalled.exists():
                await asyncio.sleep(0.01)

        host.on_start.append(hold_until_signalled)
        await host.serve_until_signal()
        print("drained")

    asyncio.run(main())
    """
)


def test_a_server_signalled_while_it_starts_finishes_starting_then_drains_and_exits_0(tmp_path: Path) -> None:
    starting, signalled = tmp_path / "starting", tmp_path / "signalled"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(starting), str(signalled), f"127.0.0.1:{free_port()}"],
        env=python_env({}),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not starting.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the server never reached its start hook"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)  # inside start(): listening, not yet SERVING
        signalled.touch()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == "drained"
