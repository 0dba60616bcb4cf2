"""SuggestMonitors beyond websites and coins: TCP ports, DNS records, jobs (heartbeats) and gRPC servers from
what a person says, and LAN hosts watched over http unless they say otherwise. Every suggestion validates and
survives the trip through its protobuf form, so it goes straight into CreateMonitor."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from harness.rpc import auth
from harness.services import Stack
from monitors.v1 import monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.domain import (
    FIELDS,
    DnsSpec,
    GrpcHealthSpec,
    HeartbeatSpec,
    Limits,
    MonitorKind,
    Spec,
    TcpSpec,
    WebsiteSpec,
    kind_of,
    validate,
)
from services.monitor_svc.suggest import MonitorDownCondition, ThresholdCondition, is_lan_host, suggest_monitors
from services.monitor_svc.translate import draft_from_proto, suggestion_to_proto

pb = monitor_service_pb2


def specs(text: str = "", url: str = "") -> list[Spec | None]:
    return [s.draft.spec for s in suggest_monitors(text, url)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch db.example.com:5432", TcpSpec("db.example.com", 5432)),
        ("is ssh on 10.0.0.5:22 still up?", TcpSpec("10.0.0.5", 22)),
        ("check port 6379 on cache.internal", TcpSpec("cache.internal", 6379)),
        ("tcp://mail.example.com:25", TcpSpec("mail.example.com", 25)),
        ("watch example.com:8443", TcpSpec("example.com", 8443)),
    ],
)
def test_host_and_port_is_a_tcp_monitor(text: str, expected: TcpSpec) -> None:
    assert specs(text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "make sure the DNS record of www.example.com still points at 203.0.113.7",
            DnsSpec("www.example.com", "A", ("203.0.113.7",)),
        ),
        ("example.net resolves to 2001:db8::1", DnsSpec("example.net", "AAAA", ("2001:db8::1",))),
        ("shop.example.com points to shops.example.net.", DnsSpec("shop.example.com", "CNAME", ("shops.example.net",))),
        ("the MX record of example.com points to mx.example.com", DnsSpec("example.com", "MX", ("mx.example.com",))),
        ("watch the DNS of example.org", DnsSpec("example.org", "A")),
    ],
)  # fmt: skip
def test_a_dns_record_and_what_it_should_point_at_is_a_dns_monitor(text: str, expected: DnsSpec) -> None:
    assert specs(text) == [expected]


@pytest.mark.parametrize(
    ("text", "name", "period", "grace"),
    [
        ("my nightly backup job", "nightly backup job", timedelta(days=1), timedelta(hours=2)),
        ("the report script that runs every 6 hours", "report script", timedelta(hours=6), timedelta(minutes=36)),
        ("our hourly cron job", "hourly cron job", timedelta(hours=1), timedelta(minutes=6)),
        ("a weekly export task", "weekly export task", timedelta(days=7), timedelta(hours=2)),
        ("the invoice job", "invoice job", timedelta(days=1), timedelta(hours=2)),  # no period named: a day
        ("sync script every 5 minutes", "sync script", timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_a_job_is_a_heartbeat_expecting_a_ping_per_the_period_named(
    text: str, name: str, period: timedelta, grace: timedelta
) -> None:
    (job,) = suggest_monitors(text)
    assert (job.draft.display_name, job.draft.spec, job.draft.interval) == (name, HeartbeatSpec(grace), period)
    assert "ping URL" in job.rationale
    assert [r.condition for r in job.alert_rules] == [MonitorDownCondition()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("our gRPC service at api.example.com:443", GrpcHealthSpec("api.example.com:443", use_tls=True)),
        ("grpc health of 10.1.2.3:50051", GrpcHealthSpec("10.1.2.3:50051")),
        ("grpc://orders.internal:9090", GrpcHealthSpec("orders.internal:9090")),
        ("grpcs://api.example.com", GrpcHealthSpec("api.example.com:443", use_tls=True)),
    ],
)
def test_a_grpc_server_is_a_grpc_health_monitor(text: str, expected: GrpcHealthSpec) -> None:
    assert specs(text) == [expected]


@pytest.mark.parametrize(
    ("text", "url", "expected"),
    [
        ("watch my NAS at nas.local", "", "http://nas.local/"),
        ("the router admin page 192.168.1.1/admin", "", "http://192.168.1.1/admin"),
        ("", "homeassistant.lan:8123", "http://homeassistant.lan:8123/"),
        ("", "localhost/health", "http://localhost/health"),
        ("https://nas.local/ too", "", "https://nas.local/"),  # the scheme given is kept
        ("", "https://192.168.1.20:5001/", "https://192.168.1.20:5001/"),
        ("watch example.com", "", "https://example.com/"),  # the internet: https first, as before
    ],
)
def test_lan_hosts_are_watched_over_http_unless_a_scheme_is_given(text: str, url: str, expected: str) -> None:
    assert specs(text, url) == [WebsiteSpec(expected)]


def test_lan_hosts() -> None:
    assert [is_lan_host(h) for h in ("10.1.2.3", "192.168.0.7", "[::1]", "fd00::5", "nas", "printer.home.arpa")] == [
        True
    ] * 6
    assert [is_lan_host(h) for h in ("example.com", "8.8.8.8", "2001:4860::8888")] == [False] * 3


def test_several_kinds_in_one_text_come_in_the_order_they_are_named() -> None:
    text = "my nightly backup job, db.example.com:5432, the DNS record of example.com still points at 203.0.113.7, BTC"
    assert [kind_of(spec) for spec in specs(text) if spec is not None] == [
        MonitorKind.HEARTBEAT,
        MonitorKind.TCP,
        MonitorKind.DNS,
        MonitorKind.CRYPTO_PRICE,
    ]


@pytest.mark.parametrize(
    "text",
    [
        "watch db.example.com:5432",
        "the DNS record of www.example.com still points at 203.0.113.7",
        "my nightly backup job",
        "our gRPC service at api.example.com:443",
        "nas.local",
    ],
)
def test_every_new_kind_validates_names_written_fields_and_survives_protobuf(text: str) -> None:
    limits = Limits(min_interval=timedelta(seconds=90))
    for suggestion in suggest_monitors(text, limits=limits):
        assert validate(suggestion.draft, limits) == suggestion.draft
        assert suggestion.draft.spec is not None
        written = FIELDS[kind_of(suggestion.draft.spec)]
        for alert_rule in suggestion.alert_rules:
            assert len(alert_rule.rationale) < 200
            assert "\n" not in alert_rule.rationale
            condition = alert_rule.condition
            assert isinstance(condition, MonitorDownCondition) or condition.field in written
        assert "\n" not in suggestion.rationale
        assert any(isinstance(r.condition, MonitorDownCondition) for r in suggestion.alert_rules)
        message = suggestion_to_proto(suggestion)
        assert draft_from_proto(message.monitor).spec == suggestion.draft.spec
    tcp = suggest_monitors("watch db.example.com:5432")[0]
    assert next(r.condition for r in tcp.alert_rules if isinstance(r.condition, ThresholdCondition)).field == (
        "connect_time_ms"
    )


def test_each_new_kind_goes_from_suggest_monitors_into_create_monitor(embedded_stack: Stack) -> None:
    text = (
        "my nightly backup job, db.example.com:5432, the DNS record of example.com still points at 203.0.113.7,"
        " our gRPC service at api.example.com:443 and the NAS at nas.local"
    )
    key = auth(embedded_stack.create_api_key("suggest.kinds@example.com"))
    with grpc.insecure_channel(embedded_stack.address("monitor")) as channel:
        stub = monitor_service_pb2_grpc.MonitorServiceStub(channel)
        response = stub.SuggestMonitors(pb.SuggestMonitorsRequest(text=text), metadata=key, timeout=5)
        kinds = [s.monitor.spec.WhichOneof("kind") for s in response.suggestions]
        assert kinds == ["heartbeat", "tcp", "dns", "grpc_health", "website"]
        assert response.suggestions[-1].monitor.spec.website.url == "http://nas.local/"
        for suggestion in response.suggestions:
            created = stub.CreateMonitor(
                pb.CreateMonitorRequest(monitor=suggestion.monitor), metadata=key, timeout=5
            ).monitor
            assert (created.spec, created.interval) == (suggestion.monitor.spec, suggestion.monitor.interval)
        assert response.suggestions[0].monitor.display_name == "nightly backup job"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("tcp db.example.com:5432", MonitorKind.TCP),
        ("dns example.com A", MonitorKind.DNS),
        ("dns example.com MX", MonitorKind.DNS),
        ("grpc_health api.example.com:443", MonitorKind.GRPC_HEALTH),
        ("heartbeat push (ping its heartbeat_url)", MonitorKind.HEARTBEAT),
    ],
)
def test_how_the_mcp_adapter_names_a_monitor_it_wants_rules_for_gives_that_kind(text: str, kind: MonitorKind) -> None:
    """create_monitor with add_suggested_alerts asks SuggestMonitors for '<kind> <target>' and keeps the
    suggestion of that kind: before, these gave a website or nothing, so such monitors got no rules."""
    found = [s.draft.spec for s in suggest_monitors(text)]
    assert [kind_of(spec) for spec in found if spec is not None] == [kind]
    if kind is MonitorKind.DNS:
        assert found == [DnsSpec("example.com", text.rsplit(" ", 1)[-1])]
