"""DNS and gRPC health checks against real servers on loopback: a small authoritative DNS server written here
with dnspython, and a grpc.aio server with the standard health service.

Functional tests use the private-allowed egress policy, since every target here is on loopback; the public
policy must refuse the same targets before a packet or connection leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from harness.http import self_signed_certificate
from harness.services import free_port
from service_runtime.egress import EgressConfig, EgressPolicy
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.checks.dns import DnsCheck, expected_form
from services.monitor_svc.domain import FIELDS, DnsSpec, GrpcHealthSpec, MonitorKind

ZONE: dict[tuple[str, str], list[str]] = {
    ("www.example.test.", "A"): ["10.0.2.10", "10.0.2.11"],
    ("www.example.test.", "AAAA"): ["fd00:db8::10"],
    ("alias.example.test.", "CNAME"): ["www.example.test."],
    ("example.test.", "MX"): ["10 mail.example.test.", "20 backup.example.test."],
    ("example.test.", "TXT"): ['"v=spf1 include:_spf.example.test" " ~all"', '"site-verification=abc123"'],
    ("example.test.", "NS"): ["ns1.example.test.", "ns2.example.test."],
    ("public.example.test.", "A"): ["8.8.8.8"],
    ("mixed.example.test.", "AAAA"): ["2001:4860:4860::8888", "fd12::80"],
}
SERVFAIL = "broken.example.test."


class ZoneServer(asyncio.DatagramProtocol):
    """Answers queries over UDP from ZONE: NXDOMAIN for unknown names, SERVFAIL for SERVFAIL, or (silent)
    nothing at all. Counts the packets it receives."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.packets = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # the selector one is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        self.packets += 1
        if self.silent or self.transport is None:
            return
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        if name == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not any(owner == name for owner, _ in ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in ZONE:
            response.answer.append(dns.rrset.from_text(name, 300, dns.rdataclass.IN, rdtype, *ZONE[name, rdtype]))
        self.transport.sendto(response.to_wire(), addr)

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"


async def start_zone_server(silent: bool = False) -> ZoneServer:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: ZoneServer(silent), local_addr=("127.0.0.1", 0)
    )
    return protocol


@pytest.fixture
async def zone() -> AsyncIterator[ZoneServer]:
    server = await start_zone_server()
    yield server
    assert server.transport is not None
    server.transport.close()


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    made = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
    yield made
    await made.close()


@pytest.fixture
async def public_checker() -> AsyncIterator[Checker]:
    made = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PUBLIC)))
    yield made
    await made.close()


# --- DNS ------------------------------------------------------------------------------------------------


async def test_a_lookup_is_up_with_its_numbers(checker: Checker, zone: ZoneServer) -> None:
    outcome = await checker.run(DnsSpec("www.example.test", "A", resolver=zone.address), 5)
    assert outcome.is_up, outcome
    assert outcome.fields["answer_count"] == 2.0
    assert 0 < outcome.fields["response_time_ms"] < 5000
    assert set(outcome.fields) <= FIELDS[MonitorKind.DNS]
    assert zone.packets == 1


@pytest.mark.parametrize(
    ("name", "record_type", "expected"),
    [
        ("www.example.test", "A", ("10.0.2.11",)),  # one of several answers is enough
        ("www.example.test", "A", ("203.0.113.1", "10.0.2.10")),  # one of several expected values is enough
        ("www.example.test", "AAAA", ("fd00:0db8:0:0::10",)),  # compared as addresses
        ("alias.example.test", "CNAME", ("WWW.Example.Test",)),  # names: any case, with or without the dot
        ("example.test", "MX", ("10 mail.example.test.",)),
        ("example.test", "MX", ("backup.example.test",)),  # an exchange alone matches at any preference
        ("example.test", "TXT", ("v=spf1 include:_spf.example.test ~all",)),  # strings joined
        ("example.test", "TXT", ('"site-verification=abc123"',)),
        ("example.test", "NS", ("ns2.example.test",)),
    ],
)
async def test_expected_answers_that_match(
    checker: Checker, zone: ZoneServer, name: str, record_type: str, expected: tuple[str, ...]
) -> None:
    outcome = await checker.run(DnsSpec(name, record_type, expected, zone.address), 5)
    assert outcome.is_up, outcome


@pytest.mark.parametrize(
    ("name", "record_type", "expected", "message"),
    [
        (
            "www.example.test",
            "A",
            ("203.0.113.1",),
            "expected one of [203.0.113.1], got [10.0.2.10, 10.0.2.11]",
        ),
        ("example.test", "MX", ("30 mail.example.test",), "expected one of [30 mail.example.test], got [10 mail"),
        ("example.test", "TXT", ("site-verification=ABC123",), "expected one of [site-verification=ABC123], got"),
    ],
)
async def test_answers_that_differ_fail_the_assertion(
    checker: Checker, zone: ZoneServer, name: str, record_type: str, expected: tuple[str, ...], message: str
) -> None:
    outcome = await checker.run(DnsSpec(name, record_type, expected, zone.address), 5)
    assert (outcome.is_up, outcome.error_class) == (False, "assertion")
    assert outcome.message.startswith(message), outcome.message
    assert outcome.fields["answer_count"] > 0


async def test_mismatch_message_is_truncated(checker: Checker, zone: ZoneServer) -> None:
    expected = ("x" * 300, *(f"198.51.100.{i}" for i in range(40)))
    outcome = await checker.run(DnsSpec("www.example.test", "A", expected, zone.address), 5)
    assert outcome.error_class == "assertion"
    assert outcome.message.startswith(f"expected one of [{'x' * 59}…, 198.51.100.0, ")
    assert "and 36 more" in outcome.message
    assert len(outcome.message) < 300


def test_expected_forms() -> None:
    assert expected_form("A", " 192.0.2.1 ") == "192.0.2.1"
    assert expected_form("AAAA", "2001:DB8::1") == "2001:db8::1"
    assert expected_form("CNAME", "Host.Example.") == "host.example"
    assert expected_form("MX", "05 Mail.Example.") == "5 mail.example"
    assert expected_form("TXT", '"quoted"') == "quoted"
    assert expected_form("TXT", "Case Kept") == "Case Kept"


@pytest.mark.parametrize(
    ("name", "record_type", "message"),
    [
        ("missing.example.test", "A", "missing.example.test does not exist (NXDOMAIN)"),
        ("alias.example.test", "MX", "alias.example.test has no MX records"),
        ("broken.example.test", "A", "no resolver answered for broken.example.test"),
    ],
)
async def test_dns_failures_are_classified(
    checker: Checker, zone: ZoneServer, name: str, record_type: str, message: str
) -> None:
    outcome = await checker.run(DnsSpec(name, record_type, resolver=zone.address), 5)
    assert (outcome.is_up, outcome.error_class) == (False, "dns")
    assert outcome.message.startswith(message), outcome.message


async def test_a_resolver_that_never_answers_times_out(checker: Checker) -> None:
    silent = await start_zone_server(silent=True)
    try:
        outcome = await checker.run(DnsSpec("www.example.test", resolver=silent.address), 0.5)
    finally:
        assert silent.transport is not None
        silent.transport.close()
    assert (outcome.is_up, outcome.error_class) == (False, "timeout")
    assert outcome.message == "no DNS answer within 0.5s"
    assert 0.4 < outcome.duration_s < 1.5
    assert silent.packets >= 1


async def test_a_resolver_name_is_resolved_and_pinned(checker: Checker, zone: ZoneServer) -> None:
    port = zone.address.rpartition(":")[2]
    outcome = await checker.run(DnsSpec("www.example.test", resolver=f"localhost:{port}"), 5)
    assert outcome.is_up, outcome
    unknown = await checker.run(DnsSpec("www.example.test", resolver="no-such-resolver.invalid"), 5)
    assert (unknown.is_up, unknown.error_class) == (False, "dns")


@pytest.mark.parametrize("resolver", ["127.0.0.1", "169.254.169.254", "10.0.0.53:53", "::1", "localhost"])
async def test_public_policy_refuses_private_resolvers_without_a_packet(
    public_checker: Checker, zone: ZoneServer, resolver: str
) -> None:
    # The loopback cases aim at the live zone server's port, which must see nothing.
    port = zone.address.rpartition(":")[2]
    target = f"{resolver}:{port}" if resolver in ("127.0.0.1", "localhost") else resolver
    outcome = await public_checker.run(DnsSpec("www.example.test", resolver=target), 5)
    assert (outcome.is_up, outcome.error_class) == (False, "blocked"), outcome
    assert outcome.message.startswith("resolver refused:")
    assert outcome.duration_s < 1
    assert zone.packets == 0


async def test_metadata_resolver_is_refused_even_when_private_addresses_are_allowed(checker: Checker) -> None:
    outcome = await checker.run(DnsSpec("www.example.test", resolver="169.254.169.254"), 5)
    assert (outcome.is_up, outcome.error_class) == (False, "blocked")


def zone_as_system_resolver(zone: ZoneServer) -> dns.asyncresolver.Resolver:
    """A resolver standing in for the runner's own (resolv.conf), which the egress policy does not check."""
    host, port = zone.address.rsplit(":", 1)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)
    return resolver


@pytest.mark.parametrize(
    ("name", "record_type", "expected", "hidden"),
    [
        ("www.example.test", "A", ("203.0.113.1",), ("10.0.2.10", "10.0.2.11")),
        ("www.example.test", "A", ("10.0.2.10",), ("10.0.2.10", "10.0.2.11")),  # nor matched: no oracle
        ("www.example.test", "A", (), ("10.0.2.10", "10.0.2.11")),
        ("mixed.example.test", "AAAA", ("2001:4860:4860::8888",), ("fd12::80",)),
    ],
)
async def test_answers_the_policy_refuses_are_neither_shown_nor_matched(
    zone: ZoneServer, name: str, record_type: str, expected: tuple[str, ...], hidden: tuple[str, ...]
) -> None:
    """The runner's resolver may know names (a cluster's services) whose private addresses a user must not
    learn: a DNS check of such a name is blocked, as a website check of it is."""
    check = DnsCheck(EgressPolicy.PUBLIC, zone_as_system_resolver(zone))
    outcome = await check.run(DnsSpec(name, record_type, expected), 5)
    assert (outcome.is_up, outcome.error_class) == (False, "blocked"), outcome
    assert "answer_count" not in outcome.fields
    for address in hidden:
        assert address not in outcome.message, outcome.message
    assert zone.packets == 1


async def test_public_answers_are_still_shown_under_the_public_policy(zone: ZoneServer) -> None:
    check = DnsCheck(EgressPolicy.PUBLIC, zone_as_system_resolver(zone))
    assert (await check.run(DnsSpec("public.example.test", "A", ("8.8.8.8",)), 5)).is_up
    outcome = await check.run(DnsSpec("public.example.test", "A", ("8.8.4.4",)), 5)
    assert outcome.error_class == "assertion"
    assert outcome.message == "expected one of [8.8.4.4], got [8.8.8.8]"


# --- gRPC health -----------------------------------------------------------------------------------------


class HealthServer:
    """A grpc.aio server on a free loopback port with only the standard health service."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.health = HealthServicer()
        self.server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = "127.0.0.1:0"
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)

    async def __aenter__(self) -> HealthServer:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(grace=None)


@pytest.fixture
async def health_server() -> AsyncIterator[HealthServer]:
    async with HealthServer() as server:
        await server.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await server.health.set("shop.Checkout", health_pb2.HealthCheckResponse.SERVING)
        await server.health.set("shop.Billing", health_pb2.HealthCheckResponse.NOT_SERVING)
        yield server


async def test_a_serving_server_is_up(checker: Checker, health_server: HealthServer) -> None:
    whole = await checker.run(GrpcHealthSpec(f"127.0.0.1:{health_server.port}"), 5)
    assert whole.is_up, whole
    assert 0 < whole.fields["response_time_ms"] < 5000
    assert set(whole.fields) <= FIELDS[MonitorKind.GRPC_HEALTH]
    service = await checker.run(GrpcHealthSpec(f"localhost:{health_server.port}", "shop.Checkout"), 5)
    assert service.is_up, service


async def test_not_serving_and_unknown_services_are_down_with_status(
    checker: Checker, health_server: HealthServer
) -> None:
    billing = await checker.run(GrpcHealthSpec(f"127.0.0.1:{health_server.port}", "shop.Billing"), 5)
    assert (billing.is_up, billing.error_class, billing.message) == (
        False,
        "status",
        "service 'shop.Billing' is NOT_SERVING",
    )
    unknown = await checker.run(GrpcHealthSpec(f"127.0.0.1:{health_server.port}", "shop.Nothing"), 5)
    assert (unknown.is_up, unknown.error_class) == (False, "status")
    assert unknown.message == "service 'shop.Nothing' is SERVICE_UNKNOWN (NOT_FOUND)"
    await health_server.health.enter_graceful_shutdown()
    draining = await checker.run(GrpcHealthSpec(f"127.0.0.1:{health_server.port}", "shop.Checkout"), 5)
    assert (draining.is_up, draining.message) == (False, "service 'shop.Checkout' is NOT_SERVING")


async def test_a_server_without_the_health_service_is_down_with_status(checker: Checker) -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        outcome = await checker.run(GrpcHealthSpec(f"127.0.0.1:{port}"), 5)
    finally:
        await server.stop(grace=None)
    assert (outcome.is_up, outcome.error_class) == (False, "status")
    assert outcome.message == f"127.0.0.1:{port} does not serve grpc.health.v1.Health"


async def test_nothing_listening_is_a_connect_failure(checker: Checker) -> None:
    outcome = await checker.run(GrpcHealthSpec(f"127.0.0.1:{free_port()}"), 5)
    assert (outcome.is_up, outcome.error_class) == (False, "connect"), outcome
    assert outcome.duration_s < 4


async def test_a_server_that_never_answers_times_out(checker: Checker) -> None:
    with listening_socket() as listener:  # accepts TCP, never speaks HTTP/2
        port = listener.getsockname()[1]
        outcome = await checker.run(GrpcHealthSpec(f"127.0.0.1:{port}"), 0.5)
    assert (outcome.is_up, outcome.error_class) == (False, "timeout"), outcome
    assert outcome.duration_s < 1.5


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "169.254.169.254"])
async def test_public_policy_refuses_private_targets_without_connecting(public_checker: Checker, host: str) -> None:
    with listening_socket() as listener:
        outcome = await public_checker.run(GrpcHealthSpec(f"{host}:{listener.getsockname()[1]}"), 5)
        assert (outcome.is_up, outcome.error_class) == (False, "blocked"), outcome
        assert outcome.duration_s < 1
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected


async def test_tls_with_the_configured_ca_and_a_pinned_address(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    async with HealthServer(credentials) as server:
        await server.health.set("", health_pb2.HealthCheckResponse.SERVING)
        trusting = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED, ca_file=str(cert))))
        untrusting = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
        try:
            # The name is resolved by us and dialled as an address; the certificate is checked for the name.
            secure = await trusting.run(GrpcHealthSpec(f"localhost:{server.port}", use_tls=True), 5)
            assert secure.is_up, secure
            refused = await untrusting.run(GrpcHealthSpec(f"localhost:{server.port}", use_tls=True), 5)
            assert (refused.is_up, refused.error_class) == (False, "tls"), refused
            plain = await trusting.run(GrpcHealthSpec(f"localhost:{server.port}"), 5)
            assert (plain.is_up, plain.error_class) in ((False, "connect"), (False, "timeout")), plain
        finally:
            await trusting.close()
            await untrusting.close()


@contextlib.contextmanager
def listening_socket() -> Iterator[socket.socket]:
    """A non-blocking loopback TCP listener that takes connections into its backlog and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener
