"""Safe outbound connections to user-chosen targets (multi-tenant SSRF defence).

Every connection resolves the name once, refuses if any resolved address is not allowed by the egress policy,
then connects to the checked address itself, so a second lookup (DNS rebinding) cannot swap in another.
HTTP redirects are followed by the caller hop by hop, and every hop connects through here again.

Policies (``MONITORS_EGRESS``):

- ``public`` (default, multi-user): only globally reachable unicast addresses, as the IANA special-purpose
  registries mark them (Python 3.11's ``is_global`` predates some entries, such as 192.0.0.0/24 where Oracle
  Cloud serves metadata at 192.0.0.192; they are listed here). Refused: loopback, private (RFC 1918,
  unique-local fc00::/7), link-local, CGNAT 100.64/10, multicast, unspecified, reserved and documentation
  ranges, cloud platform endpoints, and IPv6 forms that embed an IPv4 address (IPv4-mapped ::ffff:a.b.c.d,
  IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo) when that
  address is refused. Python before 3.13 does not see through ``::ffff:127.0.0.1`` itself; this module does.
- ``private-allowed`` (single-user self-hosting that watches a LAN): also private and loopback addresses,
  but never cloud platform endpoints, multicast or unspecified.

Cloud platform endpoints (metadata, credentials, the hypervisor's agent channel) are refused by range, not by
a list of known addresses: every IPv4 and IPv6 link-local address (169.254.0.0/16 holds the metadata services
of AWS, GCP, Azure, Oracle, Tencent, OpenStack and others at addresses that vary; fe80::a9fe:a9fe is
OpenStack's), the IETF protocol assignments 192.0.0.0/24 and AWS's fd00:ec2::/32, plus the two that sit in
ranges a LAN also uses or that look global: Alibaba's 100.100.100.200 and Azure's WireServer 168.63.129.16.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

KEEPALIVE_EXPIRY_S = 5.0
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # well-known, local-use
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d, still routed by some stacks
# IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 2765): a translator routes it to a.b.c.d; Python 3.11 calls it global.
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
# Cloud platform endpoints: never reached under any policy (see the module docstring).
_PLATFORM = [
    ipaddress.ip_network(net)
    for net in (
        "169.254.0.0/16",  # link-local: metadata of most clouds (169.254.169.254, Tencent 169.254.0.23, ECS, EKS)
        "fe80::/10",  # link-local: OpenStack fe80::a9fe:a9fe
        "192.0.0.0/24",  # IETF protocol assignments: Oracle Cloud metadata 192.0.0.192
        "fd00:ec2::/32",  # AWS metadata, DNS and NTP over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure WireServer and its DNS, a public address on every VM
    )
]
# Not globally reachable in the IANA registries, yet global to Python 3.11's ipaddress.
_NOT_GLOBAL = [
    ipaddress.ip_network(net)
    for net in (
        "192.0.0.0/24",  # IETF protocol assignments (global to 3.11 but for /29 and .170/31)
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs (RFC 9602)
    )
]


# What private-allowed adds to the public internet: the ranges a LAN or the machine itself uses.
_LAN = [
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "100.64.0.0/10",
        "::1/128",
        "fc00::/7",
        "fec0::/10",  # site-local: deprecated, still a LAN where used, and global to Python 3.11
    )
]


class EgressPolicy(StrEnum):
    PUBLIC = "public"
    PRIVATE_ALLOWED = "private-allowed"


class BlockedTarget(Exception):
    """The target resolves to an address the egress policy refuses."""


class ResolutionFailed(Exception):
    """The name does not resolve."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_TRANSLATED or (
        address in _IPV4_COMPATIBLE and not (address.is_loopback or address.is_unspecified)
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_allowed(address: IPAddress, policy: EgressPolicy) -> bool:
    """Whether ``policy`` lets a check connect to ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_allowed(embedded, policy)
        if address.scope_id:
            return False
    if address.is_multicast or address.is_unspecified or any(address in net for net in _PLATFORM):
        return False
    lan = any(address in net for net in _LAN)
    if address.is_global and not lan and not any(address in net for net in _NOT_GLOBAL):
        return True
    return policy is EgressPolicy.PRIVATE_ALLOWED and lan


async def resolve(host: str, port: int, policy: EgressPolicy) -> list[IPAddress]:
    """Every address of ``host`` once; BlockedTarget if any of them is refused (an attacker who controls a
    name must not get a chance with its other addresses)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ResolutionFailed(f"{host} does not resolve ({error.strerror})") from None
        except UnicodeError as error:  # IDNA: an empty label, a label over 63 characters
            # The host is not echoed: cut at any length it could end inside a secret substituted into it, and a
            # part of a secret is not masked as the whole would be.
            raise ResolutionFailed(f"the URL's host is not a valid host name ({error})") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
    refused = [a for a in addresses if not is_allowed(a, policy)]
    if refused or not addresses:
        # A name's refused address is not shown: it would map names only the runner can resolve (a
        # cluster's internal services) to the private addresses behind them.
        subject = f"{host} is" if literal is not None else f"{host} resolves to"
        if not refused:
            raise BlockedTarget(f"{host} resolves to nothing")
        if policy is EgressPolicy.PUBLIC and is_allowed(refused[0], EgressPolicy.PRIVATE_ALLOWED):
            why = "a private or local address, which MONITORS_EGRESS=public refuses (private-allowed reaches it)"
        else:
            why = f"an address MONITORS_EGRESS={policy.value} never reaches"
        raise BlockedTarget(f"{subject} {why}")
    return addresses


class _SafeBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked, pinned addresses."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port, self._policy)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedTarget("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _OriginPool:
    """Keep-alive HTTP/1.1 connections by origin, the most recently used first.

    Stands in for httpcore's connection pool, which looks at every connection it holds (a poll() system call
    for each idle one) whenever a request starts or ends: with a runner's hundreds of connections that cost
    more than the request. Here a request looks only at its own origin's idle connections, and expired ones
    are swept once per keep-alive period. At most ``max_connections`` are in use at once; a request waits for
    one up to its pool timeout.
    """

    def __init__(
        self, ssl_context: ssl.SSLContext, backend: httpcore.AsyncNetworkBackend, max_connections: int
    ) -> None:
        self._ssl_context = ssl_context
        self._backend = backend
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        self._swept = time.monotonic()
        self._closing: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        pool_timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpcore.PoolTimeout(f"no connection free within {pool_timeout}s") from None
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        connection = self._take(key) or httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
            network_backend=self._backend,
        )
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            self._release(key, connection)
            raise
        assert isinstance(response.stream, AsyncIterable)
        response.stream = _ReleasingStream(response.stream, lambda: self._release(key, connection))
        return response

    def _take(self, key: tuple[bytes, bytes, int]) -> httpcore.AsyncHTTPConnection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.is_available() and not connection.has_expired():
                return connection
            self._close(connection)
        return None

    def _release(self, key: tuple[bytes, bytes, int], connection: httpcore.AsyncHTTPConnection) -> None:
        self._slots.release()
        if connection.is_idle() and self._idle_count < self._max_idle:
            self._idle.setdefault(key, []).append(connection)
            self._idle_count += 1
        else:
            self._close(connection)
        if time.monotonic() - self._swept > KEEPALIVE_EXPIRY_S:
            self._sweep()

    def _sweep(self) -> None:
        self._swept = time.monotonic()
        for key, idle in list(self._idle.items()):
            kept = [c for c in idle if not c.has_expired()]
            for connection in idle:
                if connection not in kept:
                    self._close(connection)
            self._idle_count -= len(idle) - len(kept)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    def _close(self, connection: httpcore.AsyncHTTPConnection) -> None:
        # Closing a socket may await; it runs on its own so a cancelled caller cannot leave it half done.
        task = asyncio.ensure_future(connection.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                self._close(connection)
        self._idle.clear()
        self._idle_count = 0
        await asyncio.gather(*self._closing, return_exceptions=True)


class _ReleasingStream:
    """A response body that hands its connection back once the body is closed."""

    def __init__(self, stream: AsyncIterable[bytes], release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            release()


class _SafeTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: EgressPolicy, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx has no parameter for a network backend; its pool is replaced by one that has ours.
        self._pool = _OriginPool(ssl_context, _SafeBackend(policy), max_connections)  # type: ignore[assignment]


@dataclass(frozen=True)
class EgressConfig:
    policy: EgressPolicy = EgressPolicy.PUBLIC
    max_body_bytes: int = 1024 * 1024
    max_redirects: int = 5
    ca_file: str = ""  # extra trusted CA (tests, private PKI)


def tls_context(config: EgressConfig) -> ssl.SSLContext:
    """The TLS context of checks and notifications: the system's trusted CAs, and ``ca_file``'s besides (a
    LAN's own CA): given as create_default_context's cafile, it had replaced the system's, so setting it for
    one private receiver broke every public site and provider."""
    context = ssl.create_default_context()
    if config.ca_file:
        context.load_verify_locations(cafile=config.ca_file)
    return context


def safe_http_client(config: EgressConfig, max_connections: int = 200) -> httpx.AsyncClient:
    """An HTTP client whose every connection goes through the egress policy. Redirects are not followed
    here (the website check follows them hop by hop); proxies from the environment are ignored."""
    context = tls_context(config)
    return httpx.AsyncClient(
        transport=_SafeTransport(config.policy, context, max_connections),
        follow_redirects=False,
        trust_env=False,
    )


async def open_safe_connection(
    host: str, port: int, policy: EgressPolicy, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``host`` through the egress policy, for non-HTTP checks."""
    addresses = await resolve(host, port, policy)
    last_error: Exception | None = None
    for address in addresses:
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.open_connection(str(address), port)
        except OSError as error:
            last_error = error
    assert last_error is not None
    raise last_error
