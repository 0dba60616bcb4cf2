"""The heartbeat ping port takes connections from anyone, without a login: connections that send nothing (or a
header line now and then) are closed, and one client address holds only so many, so no one can take every
slot and have every tenant's pings refused (1,000 idle connections had made it answer 503 for good)."""

from __future__ import annotations

import asyncio
from typing import cast

import httpx

from services.monitor_svc.heartbeats import Heartbeats
from services.monitor_svc.ping_http import PingEndpoint


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within_s) == b""
    except TimeoutError:
        return False


async def endpoint(head_timeout_s: float, per_client: int) -> PingEndpoint:
    # Only unknown paths are asked for here (404 from the router): no heartbeat is looked up.
    ping = PingEndpoint(cast(Heartbeats, None), "127.0.0.1:0", head_timeout_s=head_timeout_s, per_client=per_client)
    await ping.start()
    return ping


async def test_connections_that_send_nothing_or_trickle_a_head_are_closed() -> None:
    ping = await endpoint(head_timeout_s=0.5, per_client=1000)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", ping.port) for _ in range(50)]
        trickling_reader, trickling = await asyncio.open_connection("127.0.0.1", ping.port)
        trickling.write(b"GET /ping/x HTTP/1.1\r\n")

        async def trickle() -> None:
            for n in range(20):
                trickling.write(f"X-Slow-{n}: 1\r\n".encode())
                await asyncio.sleep(0.2)

        feeding = asyncio.create_task(trickle())
        assert all([await closed_by_server(reader, 3.0) for reader, _ in idle])
        assert await closed_by_server(trickling_reader, 3.0)
        feeding.cancel()
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{ping.port}/nowhere", timeout=5)
        assert answer.status_code == 404  # answered, not 503
        for _, writer in [*idle, (trickling_reader, trickling)]:
            writer.close()
    finally:
        await ping.stop()


async def test_one_client_address_holds_only_so_many_connections() -> None:
    ping = await endpoint(head_timeout_s=30.0, per_client=3)
    try:
        opened = [await asyncio.open_connection("127.0.0.1", ping.port) for _ in range(5)]
        closed = [await closed_by_server(reader, 0.5) for reader, _ in opened]
        assert closed == [False, False, False, True, True]
        for _, writer in opened:
            writer.close()
    finally:
        await ping.stop()
