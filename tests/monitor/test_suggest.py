"""SuggestMonitors: free text, URLs and coin symbols become valid monitors with alert rules, deterministically;
and over gRPC on both stacks, a suggestion goes straight into CreateMonitor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import Aggregation
from services.monitor_svc.domain import (
    FIELDS,
    CryptoPriceSpec,
    Limits,
    MonitorDraft,
    WebsiteSpec,
    kind_of,
    validate,
)
from services.monitor_svc.suggest import (
    ChangeCondition,
    MonitorDownCondition,
    MonitorSuggestion,
    ThresholdCondition,
    suggest_monitors,
)

pb = monitor_service_pb2


def subjects(suggestions: list[MonitorSuggestion]) -> list[str]:
    """Each suggestion's URL or pair, in order."""
    found = []
    for s in suggestions:
        spec = s.draft.spec
        assert isinstance(spec, WebsiteSpec | CryptoPriceSpec), spec
        found.append(spec.url if isinstance(spec, WebsiteSpec) else spec.pair)
    return found


def rule(suggestion: MonitorSuggestion, condition_type: type) -> list[object]:
    return [r.condition for r in suggestion.alert_rules if isinstance(r.condition, condition_type)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch example.com", ["https://example.com/"]),
        ("https://shop.example.org/health", ["https://shop.example.org/health"]),
        (
            "keep an eye on http://intranet.example.net:8080/status?full=1.",
            ["http://intranet.example.net:8080/status?full=1"],
        ),
        ("watch Example.COM/Path", ["https://Example.COM/Path"]),
        ("bitcoin price", ["BTC-USD"]),
        ("BTC", ["BTC-USD"]),
        ("eth in euros", ["ETH-EUR"]),
        ("ether in pounds", ["ETH-GBP"]),
        ("alert me if Bitcoin goes above $70,000", ["BTC-USD"]),
        ("sol price", ["SOL-USD"]),
        ("SOL and DOGE in GBP", ["SOL-GBP", "DOGE-GBP"]),
        ("solana, cardano and xrp", ["SOL-USD", "ADA-USD", "XRP-USD"]),
        ("watch http://example.com and bitcoin.org", ["http://example.com/", "https://bitcoin.org/"]),
        ("BTC, then status.example.io", ["BTC-USD", "https://status.example.io/"]),
        ("bitcoin and BTC and xbt", ["BTC-USD"]),
        ("example.com example.com", ["https://example.com/"]),
    ],
)
def test_phrasings_become_monitors(text: str, expected: list[str]) -> None:
    assert subjects(suggest_monitors(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "send me a link to the docs",  # LINK only in capitals or as "link price"
        "a ton of dots",
        "index.html and main.py",  # file names, not hosts
        "write to ops@example.com",  # an address, not a site
        "hello there",
    ],
)
def test_text_that_names_nothing_is_invalid_argument_on_text(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        suggest_monitors(text)
    assert [v.field for v in caught.value.violations] == ["text"]
    assert "try 'watch example.com'" in caught.value.violations[0].description


def test_empty_request_and_bad_fields_name_the_field() -> None:
    cases = [
        ("text", ("   ", "", "")),
        ("url", ("", "ftp://example.com/file", "")),
        ("symbol", ("", "", "NOTACOIN")),
    ]
    for field, (text, url, symbol) in cases:
        with pytest.raises(InvalidArgument) as caught:
            suggest_monitors(text, url, symbol)
        assert [v.field for v in caught.value.violations] == [field]
    with pytest.raises(InvalidArgument) as too_long:
        suggest_monitors("watch example.com " * 200)
    assert too_long.value.violations[0].field == "text"


@pytest.mark.parametrize(
    ("symbol", "text", "pair"),
    [
        ("BTC", "", "BTC-USD"),
        ("eth-eur", "", "ETH-EUR"),
        ("ETH/GBP", "", "ETH-GBP"),
        ("BTCUSD", "", "BTC-USD"),
        ("DOGE", "", "DOGE-USD"),
        ("bitcoin", "in euros", "BTC-EUR"),
        ("ETH-USD", "in euros", "ETH-USD"),  # an explicit pair wins
    ],
)
def test_symbols(symbol: str, text: str, pair: str) -> None:
    assert subjects(suggest_monitors(text, symbol=symbol)) == [pair]


def test_url_field_comes_first_and_host_names_are_watched_over_https() -> None:
    suggestions = suggest_monitors("and bitcoin", url="status.example.com/health", symbol="ETH")
    assert subjects(suggestions) == ["https://status.example.com/health", "ETH-USD", "BTC-USD"]
    assert subjects(suggest_monitors(url="http://localhost:8080/")) == ["http://localhost:8080/"]


def test_website_rules_uptime_latency_and_certificate() -> None:
    (site,) = suggest_monitors("watch example.com")
    assert rule(site, MonitorDownCondition) == [MonitorDownCondition()]
    assert rule(site, ThresholdCondition) == [
        ThresholdCondition("response_time_ms", Aggregation.P95, timedelta(minutes=10), ">", 2000.0),
        ThresholdCondition("cert_days_left", Aggregation.LAST, None, "<", 14.0),
    ]
    assert [r.severity for r in site.alert_rules] == ["critical", "warning", "warning"]
    (plain,) = suggest_monitors("http://example.com/")
    assert [r.condition.field for r in plain.alert_rules if isinstance(r.condition, ThresholdCondition)] == [
        "response_time_ms"
    ]  # no certificate over plain http


@pytest.mark.parametrize(
    ("text", "threshold"),
    [
        ("alert me if Bitcoin goes above $70,000", (">", 70000.0, "BTC-USD")),
        ("tell me when ETH drops below 2.5k euros", ("<", 2500.0, "ETH-EUR")),
        ("BTC under €60000", ("<", 60000.0, "BTC-EUR")),
        ("btc > 100000", (">", 100000.0, "BTC-USD")),
        ("when bitcoin hits 1.2m", (">", 1200000.0, "BTC-USD")),
        ("BTC at £50,000.50", (">", 50000.5, "BTC-GBP")),  # a price without a direction means above
        ("bitcoin price", None),  # no price named: no threshold guessed
        ("ETH moves 10% over 1 hour", None),  # a percentage and a window are not prices
        ("watch example.com:8443 and BTC", None),  # nor is a port
    ],
)
def test_coin_price_threshold_from_the_text(text: str, threshold: tuple[str, float, str] | None) -> None:
    coin = next(s for s in suggest_monitors(text) if isinstance(s.draft.spec, CryptoPriceSpec))
    found = rule(coin, ThresholdCondition)
    if threshold is None:
        assert found == []
    else:
        operator, value, pair = threshold
        assert found == [ThresholdCondition("price", Aggregation.LAST, None, operator, value)]
        assert coin.draft.spec == CryptoPriceSpec(pair)


def test_coin_move_rule_is_five_percent_in_an_hour_unless_the_text_says() -> None:
    (default,) = suggest_monitors("bitcoin price")
    assert rule(default, ChangeCondition) == [ChangeCondition("price", timedelta(hours=1), 5.0, "either")]
    (custom,) = suggest_monitors("tell me if ETH moves 10% over 1 hour")
    assert rule(custom, ChangeCondition) == [ChangeCondition("price", timedelta(hours=1), 10.0, "either")]
    (threshold_text,) = suggest_monitors("alert me if Bitcoin goes above $70,000")
    assert [r.display_name for r in threshold_text.alert_rules] == ["BTC above 70,000 USD", "BTC moved 5% in 1h"]


@pytest.mark.parametrize(
    "text",
    [
        "watch example.com",
        "https://shop.example.org/health and ETH in euros",
        "alert me if Bitcoin goes above $70,000",
        "solana, cardano, xrp, dogecoin, litecoin, monero, stellar, tron, avax, bnb, shib, toncoin, polkadot",
        "LINK DOT TON POL ADA",
    ],
)
def test_every_suggestion_validates_and_its_rules_name_written_fields(text: str) -> None:
    limits = Limits(min_interval=timedelta(seconds=90))
    suggestions = suggest_monitors(text, limits=limits)
    assert suggestions
    for suggestion in suggestions:
        assert validate(suggestion.draft, limits) == suggestion.draft
        assert suggestion.draft.interval == timedelta(seconds=90)  # the deployment's minimum, above 60 s
        assert suggestion.rationale
        assert "\n" not in suggestion.rationale
        assert suggestion.alert_rules
        assert suggestion.draft.spec is not None
        written = FIELDS[kind_of(suggestion.draft.spec)]
        for alert_rule in suggestion.alert_rules:
            assert alert_rule.rationale
            assert "\n" not in alert_rule.rationale
            assert len(alert_rule.rationale) < 200
            condition = alert_rule.condition
            assert isinstance(condition, MonitorDownCondition) or condition.field in written, alert_rule


def test_suggestions_are_deterministic() -> None:
    text = "watch example.com, bitcoin above $70,000 and ETH in euros"
    assert suggest_monitors(text) == suggest_monitors(text)
    assert isinstance(suggest_monitors(text)[0].draft, MonitorDraft)


# --- over gRPC ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(stack: Stack) -> tuple[tuple[str, str]]:
    return auth(stack.create_api_key("alice.suggest@example.com"))


@pytest.fixture
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


def test_a_suggestion_goes_straight_into_create_monitor(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    response = stub.SuggestMonitors(
        pb.SuggestMonitorsRequest(text="alert me if Bitcoin goes above $70,000", url="shop.example.org/health"),
        metadata=alice,
        timeout=5,
    )
    site, coin = response.suggestions
    assert site.monitor.spec.website.url == "https://shop.example.org/health"
    assert coin.monitor.spec.crypto_price.pair == "BTC-USD"
    assert [r.condition.WhichOneof("kind") for r in site.alert_rules] == ["monitor_down", "threshold", "threshold"]
    price = coin.alert_rules[0]
    assert (price.condition.threshold.field, price.condition.threshold.value) == ("price", 70000.0)
    assert price.condition.threshold.operator == common_pb2.COMPARISON_OPERATOR_GREATER_THAN
    assert not price.condition.threshold.HasField("window")  # the latest sample
    assert price.severity == common_pb2.SEVERITY_WARNING
    assert price.rationale
    move = coin.alert_rules[1].condition.change
    assert (move.field, move.window.seconds, move.percent) == ("price", 3600, 5.0)
    assert move.direction == common_pb2.CHANGE_DIRECTION_EITHER
    for suggestion in response.suggestions:
        created = stub.CreateMonitor(
            pb.CreateMonitorRequest(monitor=suggestion.monitor), metadata=alice, timeout=5
        ).monitor
        assert created.id.startswith("mon_")
        assert (created.spec, created.display_name, created.interval) == (
            suggestion.monitor.spec,
            suggestion.monitor.display_name,
            suggestion.monitor.interval,
        )


def test_suggest_monitors_errors_name_the_field(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, alice: tuple[tuple[str, str]]
) -> None:
    for request, field in [
        (pb.SuggestMonitorsRequest(), "text"),
        (pb.SuggestMonitorsRequest(text="hello there"), "text"),
        (pb.SuggestMonitorsRequest(symbol="NOPE-XYZ"), "symbol"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.SuggestMonitors(request, metadata=alice, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = rich_details(caught.value)
        assert [v.field for d in details for v in getattr(d, "field_violations", [])] == [field]
    with pytest.raises(grpc.RpcError) as unauthenticated:
        stub.SuggestMonitors(pb.SuggestMonitorsRequest(text="BTC"), timeout=5)
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
