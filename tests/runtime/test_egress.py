"""The public egress policy refuses every private, loopback, link-local, CGNAT, multicast and metadata
target, however it is spelled, and no connection reaches a loopback listener."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.http import HttpServer, Reply, self_signed_certificate
from service_runtime.egress import BlockedTarget, EgressConfig, EgressPolicy, is_allowed, resolve, tls_context
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.domain import TcpSpec, WebsiteSpec

REFUSED_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "::7f00:1",  # IPv4-compatible
    "::a9fe:a9fe",
    "64:ff9b:1::a00:1",  # local-use NAT64
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1 (Python 3.11 calls it global)
    "::ffff:0:a9fe:a9fe",
    "fec0::1",  # site-local (likewise)
    "192.0.0.192",  # Oracle Cloud metadata (IETF protocol assignments; global to Python 3.11)
    "192.0.0.1",
    "::ffff:192.0.0.192",
    "168.63.129.16",  # Azure WireServer: a public address on every Azure VM
    "::ffff:168.63.129.16",
    "64:ff9b::a83f:8110",
    "169.254.0.23",  # Tencent Cloud metadata
    "3fff::1",  # documentation (RFC 9637)
    "5f00::1",  # SRv6 SIDs
]
ALLOWED_PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "::ffff:0:808:808",
]


@pytest.mark.parametrize("address", REFUSED_PUBLIC)
def test_the_public_policy_refuses(address: str) -> None:
    assert not is_allowed(ipaddress.ip_address(address), EgressPolicy.PUBLIC)


@pytest.mark.parametrize("address", ALLOWED_PUBLIC)
def test_the_public_policy_allows_global_unicast(address: str) -> None:
    assert is_allowed(ipaddress.ip_address(address), EgressPolicy.PUBLIC)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "::a9fe:a9fe",
        "fd00:ec2::254",
        "169.254.170.23",
        "fd00:ec2::23",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "169.254.0.23",  # Tencent Cloud
        "169.254.1.1",  # any link-local address: clouds put their endpoints there at addresses that vary
        "::ffff:169.254.0.23",
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer
        "fe80::a9fe:a9fe",  # OpenStack over IPv6
        "fd00:ec2::250",  # AWS's whole fd00:ec2::/32
    ],
)
def test_private_allowed_still_refuses_metadata_multicast_and_unspecified(address: str) -> None:
    assert not is_allowed(ipaddress.ip_address(address), EgressPolicy.PRIVATE_ALLOWED)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "::ffff:192.168.1.1", "fd12::1", "fec0::1"])
def test_private_allowed_reaches_the_lan_and_the_machine(address: str) -> None:
    assert is_allowed(ipaddress.ip_address(address), EgressPolicy.PRIVATE_ALLOWED)


@pytest.fixture
async def public_checker() -> AsyncIterator[Checker]:
    made = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PUBLIC)))
    yield made
    await made.close()


@pytest.fixture
def listener() -> Iterator[HttpServer]:
    with HttpServer() as server:
        server.routes["/"] = Reply(200, b"internal admin page")
        yield server


def spellings(port: int) -> list[str]:
    """Ways to write the loopback listener's address that resolvers and URL parsers accept."""
    return [
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://2130706433:{port}/",  # decimal
        f"http://0x7f000001:{port}/",  # hex
        f"http://0x7f.0.0.1:{port}/",
        f"http://0177.0.0.1:{port}/",  # octal
        f"http://017700000001:{port}/",
        f"http://127.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://[::ffff:7f00:1]:{port}/",
        f"http://0.0.0.0:{port}/",
    ]


async def test_no_spelling_of_loopback_gets_through(public_checker: Checker, listener: HttpServer) -> None:
    for url in spellings(listener.port):
        outcome = await public_checker.run(WebsiteSpec(url=url), 3)
        assert not outcome.is_up, url
        assert outcome.error_class in ("blocked", "dns"), (url, outcome)
    assert listener.connections == 0


async def test_tcp_checks_obey_the_policy_too(public_checker: Checker, listener: HttpServer) -> None:
    for host in ("127.0.0.1", "localhost", "::ffff:127.0.0.1", "2130706433"):
        outcome = await public_checker.run(TcpSpec(host, listener.port), 3)
        assert (outcome.is_up, outcome.error_class) == (False, "blocked"), host
    assert listener.connections == 0


async def test_a_refused_name_does_not_reveal_its_address() -> None:
    """What a name resolves to is the runner's knowledge (a cluster's internal names), not the user's."""
    with pytest.raises(BlockedTarget) as refused:
        await resolve("localhost", 80, EgressPolicy.PUBLIC)
    assert str(refused.value).startswith("localhost resolves to a private or local address"), refused.value
    assert "127.0.0.1" not in str(refused.value)
    assert "::1" not in str(refused.value)
    with pytest.raises(BlockedTarget, match=r"^10\.1\.2\.3 is a private or local address"):
        await resolve("10.1.2.3", 80, EgressPolicy.PUBLIC)  # a literal the user typed is named


async def test_a_redirect_to_cloud_metadata_is_refused_at_the_hop() -> None:
    """The first hop is allowed (private-allowed, a LAN target); the redirect to 169.254.169.254 is not."""
    with HttpServer() as server:
        server.routes["/"] = Reply(302, b"", {"location": "http://169.254.169.254/latest/meta-data/"})
        server.routes["/v6"] = Reply(302, b"", {"location": "http://[::ffff:169.254.169.254]/latest/"})
        server.routes["/file"] = Reply(302, b"", {"location": "file:///etc/passwd"})
        checker = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
        for path, error_class in (("/", "blocked"), ("/v6", "blocked"), ("/file", "blocked")):
            outcome = await checker.run(WebsiteSpec(url=server.url(path)), 3)
            assert (outcome.is_up, outcome.error_class) == (False, error_class), (path, outcome)
        await checker.close()


def test_an_extra_ca_file_is_trusted_besides_the_systems_cas(tmp_path: Path) -> None:
    """MONITORS_CA_FILE adds a CA (a LAN receiver's): the system's CAs stay trusted for public sites and
    providers (given as create_default_context's cafile, it had replaced them)."""
    system = tls_context(EgressConfig()).cert_store_stats()["x509_ca"]
    cert, _ = self_signed_certificate(tmp_path)

    extended = tls_context(EgressConfig(ca_file=str(cert))).cert_store_stats()["x509_ca"]

    assert system > 0
    assert extended == system + 1


async def test_a_check_trusts_the_extra_ca(tmp_path: Path) -> None:
    """A website check of a receiver whose certificate only the extra CA signs is up with MONITORS_CA_FILE
    set (the checker's context is tls_context's, tested above for the system's CAs)."""
    certificate = self_signed_certificate(tmp_path)
    config = CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED, ca_file=str(certificate[0])))
    with HttpServer(certificate) as server:
        server.routes["/"] = lambda path, headers, body: Reply(200, b"ok")
        checker = Checker(config)
        try:
            outcome = await checker.run(WebsiteSpec(url=server.url("/")), 5.0)
        finally:
            await checker.close()

    assert outcome.is_up, outcome.message
