"""The TCP check: connect, through the egress policy, and measure how long it took."""

from __future__ import annotations

import asyncio
import contextlib
import time

from service_runtime.egress import BlockedTarget, EgressPolicy, ResolutionFailed, open_safe_connection
from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.domain import TcpSpec


async def check_tcp(policy: EgressPolicy, spec: TcpSpec, timeout_s: float) -> Outcome:
    started = time.perf_counter()
    try:
        _, writer = await open_safe_connection(spec.host, spec.port, policy, timeout_s)
    except BlockedTarget as error:
        return fail("blocked", str(error), started)
    except ResolutionFailed as error:
        return fail("dns", str(error), started)
    except TimeoutError:
        return fail("timeout", f"no connection within {timeout_s:g}s", started)
    except OSError as error:
        return fail("connect", f"connection failed: {error.strerror or error}", started)
    elapsed = time.perf_counter() - started
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1):
            await writer.wait_closed()
    return Outcome(True, elapsed, fields={"connect_time_ms": round(elapsed * 1000, 3)})
