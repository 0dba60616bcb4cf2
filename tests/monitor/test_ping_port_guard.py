"""The heartbeat ping port takes connections from anyone, without a login: connections that send nothing (or a
header line now and then) are closed, and one client address holds only so many, so no one can take every
slot and have every tenant's pings refused (1,000 idle connections had made it answer 503 for good)."""

from __future__ import annotations

import asyncio
from typing import cast

import httpx

from services.monitor_svc.heartbeats import Heartbeats
from services.monitor_svc.ping_http import PingEndpoint, client_network


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within_s) == b""
    except TimeoutError:
        return False


async def endpoint(head_timeout_s: float, per_client: int, request_timeout_s: float = 30.0) -> PingEndpoint:
    # No heartbeat is ever looked up: unknown paths are 404 from the router, and a trickled body never ends.
    ping = PingEndpoint(
        cast(Heartbeats, None),
        "127.0.0.1:0",
        head_timeout_s=head_timeout_s,
        per_client=per_client,
        request_timeout_s=request_timeout_s,
    )
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


async def test_a_request_whose_body_trickles_in_is_closed_after_the_request_timeout() -> None:
    """The head arrives at once, then a promised megabyte comes a byte at a time: it had held its slot as long as
    the sender liked (ten addresses' worth of these held all 1,000)."""
    ping = await endpoint(head_timeout_s=0.3, per_client=1000, request_timeout_s=1.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ping.port)
        writer.write(b"POST /ping/some-token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")

        async def trickle() -> None:
            while True:
                writer.write(b"x")
                await asyncio.sleep(0.1)

        feeding = asyncio.create_task(trickle())
        assert not await closed_by_server(reader, 1.0)  # still within its time
        assert await closed_by_server(reader, 2.0)
        feeding.cancel()
        writer.close()
    finally:
        await ping.stop()


async def test_addresses_of_one_network_share_its_connection_cap() -> None:
    ping = await endpoint(head_timeout_s=30.0, per_client=3)
    try:
        first = [await asyncio.open_connection("127.0.0.1", ping.port, local_addr=("127.0.0.1", 0)) for _ in range(2)]
        other = [await asyncio.open_connection("127.0.0.1", ping.port, local_addr=("127.0.0.2", 0)) for _ in range(3)]
        closed = [await closed_by_server(reader, 0.5) for reader, _ in [*first, *other]]
        assert closed == [False, False, False, True, True]  # 127.0.0.1 and 127.0.0.2: one /24, three in all
        for _, writer in [*first, *other]:
            writer.close()
    finally:
        await ping.stop()


def test_client_networks_are_the_ipv4_24_and_ipv6_64() -> None:
    assert client_network("198.51.100.7") == client_network("198.51.100.200") == "198.51.100.0/24"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.0/24"
    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
