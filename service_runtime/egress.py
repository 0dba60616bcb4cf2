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
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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
