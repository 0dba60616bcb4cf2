"""Checks against real servers on loopback: websites (with TLS), crypto price providers, TCP.

Functional tests use the private-allowed egress policy, since every target here is on loopback; the
egress tests (test_egress.py) prove the public policy refuses exactly these targets.
"""

from __future__ import annotations

import gzip
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.checks import providers
from harness.http import HttpServer, Reply, self_signed_certificate
from harness.services import free_port
from service_runtime.egress import EgressConfig, EgressPolicy
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.domain import (
    CryptoPriceSpec,
    JsonPathAssertion,
    KeywordAssertion,
    TcpSpec,
    WebsiteSpec,
)


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    made = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
    yield made
    await made.close()


@pytest.fixture
def site() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


async def test_a_healthy_page_is_up_with_its_numbers(checker: Checker, site: HttpServer) -> None:
    site.routes["/health"] = Reply(200, b"all good")
    outcome = await checker.run(WebsiteSpec(url=site.url("/health")), 5)
    assert outcome.is_up, outcome
    assert outcome.fields["status_code"] == 200.0
    assert 0 < outcome.fields["response_time_ms"] < 5000
    assert "cert_days_left" not in outcome.fields  # plain http


@pytest.mark.parametrize(
    ("status", "accepted", "up"),
    [(500, ((200, 399),), False), (404, ((200, 399),), False), (404, ((404, 404),), True), (204, ((200, 299),), True)],
)
async def test_status_codes_against_accepted_ranges(
    checker: Checker, site: HttpServer, status: int, accepted: tuple[tuple[int, int], ...], up: bool
) -> None:
    site.routes["/"] = Reply(status, b"")
    outcome = await checker.run(WebsiteSpec(url=site.url("/"), accepted_status_codes=accepted), 5)
    assert (outcome.is_up, outcome.fields["status_code"]) == (up, float(status))
    if not up:
        assert (outcome.error_class, outcome.message) == ("status", f"HTTP {status}")


async def test_keyword_present_and_absent(checker: Checker, site: HttpServer) -> None:
    site.routes["/"] = Reply(200, b"<h1>Welcome to the Shop</h1>")
    assert (await checker.run(WebsiteSpec(url=site.url(), keyword=KeywordAssertion("welcome")), 5)).is_up
    sensitive = await checker.run(
        WebsiteSpec(url=site.url(), keyword=KeywordAssertion("welcome", case_sensitive=True)), 5
    )
    assert (sensitive.is_up, sensitive.error_class) == (False, "assertion")
    absent = await checker.run(WebsiteSpec(url=site.url(), keyword=KeywordAssertion("Error", absent=True)), 5)
    assert absent.is_up
    present = await checker.run(WebsiteSpec(url=site.url(), keyword=KeywordAssertion("Shop", absent=True)), 5)
    assert (present.is_up, present.message) == (False, "keyword 'Shop' present")


async def test_json_path_assertions(checker: Checker, site: HttpServer) -> None:
    site.routes["/status"] = Reply.json({"status": "ok", "db": {"latency_ms": 12.5}, "nodes": [{"up": True}]})
    cases = [
        (JsonPathAssertion("$.status", "==", "ok"), True),
        (JsonPathAssertion("$.db.latency_ms", "<", "100"), True),
        (JsonPathAssertion("$.db.latency_ms", ">", "100"), False),
        (JsonPathAssertion("$.nodes[0].up", "==", "true"), True),
        (JsonPathAssertion("$['status']", "!=", "ok"), False),
        (JsonPathAssertion("$.missing", "==", "x"), False),
    ]
    for assertion, up in cases:
        outcome = await checker.run(WebsiteSpec(url=site.url("/status"), json_path=assertion), 5)
        assert outcome.is_up == up, (assertion, outcome)
    missing = await checker.run(WebsiteSpec(url=site.url("/status"), json_path=cases[-1][0]), 5)
    assert missing.message == "$.missing not found"


async def test_redirects_are_followed_or_reported(checker: Checker, site: HttpServer) -> None:
    site.routes["/old"] = Reply(301, b"", {"location": "/new"})
    site.routes["/new"] = Reply(200, b"moved here")
    followed = await checker.run(WebsiteSpec(url=site.url("/old"), keyword=KeywordAssertion("moved here")), 5)
    assert followed.is_up
    kept = await checker.run(WebsiteSpec(url=site.url("/old"), follow_redirects=False), 5)
    assert (kept.is_up, kept.fields["status_code"]) == (True, 301.0)  # 301 is within the default 200-399
    site.routes["/loop"] = Reply(302, b"", {"location": "/loop"})
    loop = await checker.run(WebsiteSpec(url=site.url("/loop")), 5)
    assert (loop.is_up, loop.message) == (False, "more than 5 redirects")


async def test_the_users_headers_do_not_follow_a_redirect_to_another_origin(checker: Checker, site: HttpServer) -> None:
    """Secrets may sit in any header ({{secret:NAME}}), and Host names the first origin: none of the user's
    headers go to another origin; on the same origin they all do."""
    with HttpServer() as elsewhere:
        elsewhere.routes["/landing"] = Reply(200, b"landed")
        site.routes["/away"] = Reply(302, b"", {"location": elsewhere.url("/landing")})
        site.routes["/here"] = Reply(302, b"", {"location": "/landing"})
        site.routes["/landing"] = Reply(200, b"landed")
        secret = {"Authorization": "Bearer s3cr3t", "Cookie": "session=1", "X-Api-Key": "{{secret:KEY}}"}
        spec = WebsiteSpec(url=site.url("/away"), headers=secret)
        assert (await checker.run(spec, 5, {"KEY": "k3y"})).is_up
        [(_, _, sent)] = elsewhere.requests
        assert not {"authorization", "cookie", "x-api-key"} & set(sent)
        assert sent["host"] == f"127.0.0.1:{elsewhere.port}"
        assert sent["user-agent"].startswith("monitors")
        assert (await checker.run(WebsiteSpec(url=site.url("/here"), headers=secret), 5, {"KEY": "k3y"})).is_up
        same_origin = [headers for _, path, headers in site.requests if path == "/landing"][-1]
        assert (same_origin["authorization"], same_origin["x-api-key"]) == ("Bearer s3cr3t", "k3y")


async def test_a_body_is_not_resent_to_another_origin(checker: Checker, site: HttpServer) -> None:
    """A 307 or 308 resends the body, where secrets may sit too: not to another origin (it went before)."""
    with HttpServer() as elsewhere:
        elsewhere.routes["/landing"] = Reply(200, b"landed")
        site.routes["/landing"] = Reply(200, b"landed")
        for status in (307, 308):
            site.routes[f"/away{status}"] = Reply(status, b"", {"location": elsewhere.url("/landing")})
            site.routes[f"/here{status}"] = Reply(status, b"", {"location": "/landing"})
            spec = WebsiteSpec(url=site.url(f"/away{status}"), method="POST", body='{"token": "{{secret:KEY}}"}')
            away = await checker.run(spec, 5, {"KEY": "k3y"})
            assert (away.is_up, away.error_class) == (False, "blocked")
            assert away.message == f"{status} redirect to another origin refused: it would resend the body"
            here = replace(spec, url=site.url(f"/here{status}"))
            assert (await checker.run(here, 5, {"KEY": "k3y"})).is_up
            assert [(m, p) for m, p, _ in site.requests][-1] == ("POST", "/landing")
        assert elsewhere.requests == []
        # A redirect that drops the body (303, or 301/302 after a POST) still goes there, as a GET.
        site.routes["/see-other"] = Reply(303, b"", {"location": elsewhere.url("/landing")})
        assert (await checker.run(replace(spec, url=site.url("/see-other")), 5, {"KEY": "k3y"})).is_up
        assert [(m, p) for m, p, _ in elsewhere.requests] == [("GET", "/landing")]


async def test_bodies_it_cannot_decode_fail_body_assertions(checker: Checker, site: HttpServer) -> None:
    site.routes["/br"] = Reply(200, b"\x0b\x01\x80\x03", {"content-encoding": "br"})
    plain = await checker.run(WebsiteSpec(url=site.url("/br")), 5)
    assert plain.is_up  # no assertion on the body: its status is all that counts
    keyword = await checker.run(WebsiteSpec(url=site.url("/br"), keyword=KeywordAssertion("x", absent=True)), 5)
    assert (keyword.is_up, keyword.error_class) == (False, "assertion")
    assert keyword.message == "cannot read the body: the body is br-encoded, which checks cannot decode"


async def test_a_redirect_to_a_host_name_that_cannot_exist_is_a_dns_failure(checker: Checker, site: HttpServer) -> None:
    site.routes["/bad"] = Reply(302, b"", {"location": "http://a..example/"})
    site.routes["/long"] = Reply(302, b"", {"location": f"http://{'a' * 64}.example/"})
    for path in ("/bad", "/long"):
        outcome = await checker.run(WebsiteSpec(url=site.url(path)), 5)
        assert (outcome.is_up, outcome.error_class) == (False, "dns"), outcome


async def test_bodies_are_read_up_to_one_mebibyte(checker: Checker, site: HttpServer) -> None:
    site.routes["/big"] = Reply(200, b"x" * (2 * 1024 * 1024) + b"NEEDLE")
    outcome = await checker.run(WebsiteSpec(url=site.url("/big"), keyword=KeywordAssertion("NEEDLE")), 5)
    assert (outcome.is_up, outcome.message) == (False, "keyword 'NEEDLE' missing in the first 1 MiB")


async def test_bodies_are_asked_for_uncompressed_and_decoded_when_compressed_anyway(
    checker: Checker, site: HttpServer
) -> None:
    page = b"<html>" + b"filler " * 1000 + b"Welcome back</html>"
    site.routes["/gz"] = Reply(200, gzip.compress(page), {"content-encoding": "gzip"})
    outcome = await checker.run(WebsiteSpec(url=site.url("/gz"), keyword=KeywordAssertion("Welcome back")), 5)
    assert outcome.is_up, outcome
    sent = [headers for _, path, headers in site.requests if path == "/gz"][-1]
    assert sent["accept-encoding"] == "identity"
    assert sent["user-agent"].startswith("monitors")
    # The user's own header wins.
    spec = WebsiteSpec(url=site.url("/gz"), headers={"Accept-Encoding": "gzip"}, keyword=KeywordAssertion("Welcome"))
    assert (await checker.run(spec, 5)).is_up
    assert [h for _, p, h in site.requests if p == "/gz"][-1]["accept-encoding"] == "gzip"
    # A compression bomb is decoded no further than the 1 MiB cap.
    site.routes["/bomb"] = Reply(
        200, gzip.compress(b"\0" * (64 * 1024 * 1024) + b"NEEDLE"), {"content-encoding": "gzip"}
    )
    bomb = await checker.run(WebsiteSpec(url=site.url("/bomb"), keyword=KeywordAssertion("NEEDLE")), 5)
    assert (bomb.is_up, bomb.message) == (False, "keyword 'NEEDLE' missing in the first 1 MiB")


async def test_failures_are_classified(checker: Checker, site: HttpServer) -> None:
    site.routes["/slow"] = Reply(200, b"late", delay_s=2)
    slow = await checker.run(WebsiteSpec(url=site.url("/slow")), 0.5)
    assert (slow.is_up, slow.error_class) == (False, "timeout")
    assert slow.duration_s < 1.5
    closed = await checker.run(WebsiteSpec(url=f"http://127.0.0.1:{free_port()}/"), 5)
    assert (closed.is_up, closed.error_class) == (False, "connect")
    unknown = await checker.run(WebsiteSpec(url="http://no-such-host.invalid/"), 5)
    assert (unknown.is_up, unknown.error_class) == (False, "dns")


async def test_tls_errors_and_certificate_days(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path, days=90)
    with HttpServer(certificate=(cert, key)) as server:
        server.routes["/"] = Reply(200, b"secure")
        untrusted = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
        refused = await untrusted.run(WebsiteSpec(url=server.url("/", host="localhost")), 5)
        await untrusted.close()
        assert (refused.is_up, refused.error_class) == (False, "tls")
        trusting = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED, ca_file=str(cert))))
        outcome = await trusting.run(WebsiteSpec(url=server.url("/", host="localhost")), 5)
        assert outcome.is_up, outcome
        assert 89 < outcome.fields["cert_days_left"] <= 90
        expiring = await trusting.run(WebsiteSpec(url=server.url("/", host="localhost"), cert_expiry_days=120), 5)
        assert (expiring.is_up, expiring.error_class) == (False, "tls")
        assert re.fullmatch(r"certificate expires in (89\.\d+|90\.0) days", expiring.message), expiring.message
        await trusting.close()


async def test_secrets_are_substituted_and_masked(checker: Checker, site: HttpServer) -> None:
    site.routes["/private"] = lambda path, headers, body: Reply(
        200 if headers.get("authorization") == "Bearer s3cr3t-value" else 401, b"denied s3cr3t-value"
    )
    spec = WebsiteSpec(url=site.url("/private"), headers={"Authorization": "Bearer {{secret:API_TOKEN}}"})
    assert (await checker.run(spec, 5, {"API_TOKEN": "s3cr3t-value"})).is_up
    wrong = await checker.run(spec, 5, {"API_TOKEN": "other"})
    assert (wrong.is_up, wrong.message) == (False, "HTTP 401")
    missing = await checker.run(spec, 5, {})
    assert (missing.is_up, missing.message) == (False, "secret API_TOKEN is not set; PutSecret it first")
    leaky = WebsiteSpec(url=site.url("/private"), keyword=KeywordAssertion("nothing"), headers=spec.headers)
    masked = await checker.run(leaky, 5, {"API_TOKEN": "s3cr3t-value"})
    assert "s3cr3t-value" not in masked.message


async def test_each_provider_is_read_as_documented() -> None:
    with HttpServer() as server:
        server.routes["/v2/prices/BTC-USD/spot"] = Reply.json(
            {"data": {"amount": "70123.45", "base": "BTC", "currency": "USD"}}
        )
        server.routes["/api/v3/ticker/price"] = lambda path, h, b: Reply.json(
            {"symbol": "BTCUSDT", "price": "70100.10000000"} if "symbol=BTCUSDT" in path else {"code": -1121}, 200
        )
        server.routes["/0/public/Ticker"] = lambda path, h, b: Reply.json(
            {"error": [], "result": {"XXBTZUSD": {"a": ["70200.1", "1", "1.0"], "c": ["70150.0", "0.01"]}}}
            if "pair=XBTUSD" in path
            else {"error": ["EQuery:Unknown asset pair"]}
        )
        server.routes["/api/v3/simple/price"] = lambda path, h, b: Reply.json(
            {"bitcoin": {"usd": 70099.5}} if "ids=bitcoin" in path and "vs_currencies=usd" in path else {}
        )
        checker = Checker(CheckConfig(providers=providers(server)))
        expected = {"coinbase": 70123.45, "binance": 70100.1, "kraken": 70150.0, "coingecko": 70099.5}
        for name, price in expected.items():
            outcome = await checker.run(CryptoPriceSpec("BTC-USD", (name,)), 5)
            assert outcome.is_up, outcome
            assert (outcome.fields["price"], outcome.tags["provider"]) == (price, name)
        await checker.close()


async def test_providers_fall_back_in_order() -> None:
    with HttpServer() as server:
        server.routes["/v2/prices/ETH-EUR/spot"] = Reply(503, b"maintenance")
        server.routes["/api/v3/ticker/price"] = Reply.json({"code": -1121, "msg": "Invalid symbol."}, 400)
        server.routes["/0/public/Ticker"] = Reply.json({"error": [], "result": {"XETHZEUR": {"c": ["3100.5", "1"]}}})
        checker = Checker(CheckConfig(providers=providers(server)))
        outcome = await checker.run(CryptoPriceSpec("ETH-EUR", ("coinbase", "binance", "kraken", "coingecko")), 5)
        assert outcome.is_up, outcome
        assert (outcome.fields["price"], outcome.fields["provider_index"], outcome.tags["provider"]) == (
            3100.5,
            2.0,
            "kraken",
        )
        nothing = await checker.run(CryptoPriceSpec("ETH-EUR", ("coinbase", "binance")), 5)
        assert (nothing.is_up, nothing.error_class) == (False, "provider")
        assert "coinbase: ProviderError HTTP 503" in nothing.message
        assert "binance" in nothing.message
        await checker.close()


async def test_tcp_connect(checker: Checker) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        outcome = await checker.run(TcpSpec("127.0.0.1", port), 5)
        assert outcome.is_up
        assert outcome.fields["connect_time_ms"] > 0
    closed = await checker.run(TcpSpec("127.0.0.1", free_port()), 5)
    assert (closed.is_up, closed.error_class) == (False, "connect")
