"""The MCP adapter, driven by the official ``mcp`` client as a subprocess over stdio and over streamable HTTP,
against the real services (harness), a runner, and local stand-ins for Coinbase and a website.

Its fixture is in tests/mcp/conftest.py, its helpers in harness/mcp.py.
"""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from mcp_types import ImageContent

from harness.mcp import (
    HttpAdapter,
    McpStack,
    call,
    call_error,
    eventually,
    stdio_adapter,
    text_of,
)
from harness.services import free_port

# Tools listing ---------------------------------------------------------------------------------------------------


async def test_tools_are_listed_with_schemas_and_hints(mcp_stack: McpStack) -> None:
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=mcp_stack.stack.create_api_key("lister@example.com")) as s:
        tools = {tool.name: tool for tool in (await s.list_tools()).tools}
    expected = {
        "request_login_code", "verify_login_code", "logout", "whoami",
        "suggest_monitors", "create_monitor", "list_monitors", "get_monitor", "update_monitor", "pause_monitor",
        "resume_monitor", "delete_monitor", "run_check_now", "get_monitor_status", "get_deployment_status",
        "list_heartbeat_pings",
        "get_monitor_data", "summarize_monitor", "summarize_monitors", "get_crypto_analysis",
        "get_website_uptime_analysis", "plot_monitor_data", "store_secret", "list_secrets", "delete_secret",
        "create_alert_rule", "list_alert_rules", "update_alert_rule", "delete_alert_rule", "test_alert_rule",
        "list_alerts", "get_alert", "acknowledge_alert", "resolve_alert", "create_silence", "list_silences",
        "delete_silence", "create_channel", "list_channels", "test_channel", "delete_channel", "list_deliveries",
    }  # fmt: skip
    assert set(tools) == expected
    for name, tool in tools.items():
        assert len(tool.description or "") > 60, name
        assert tool.annotations is not None, name
        if name.startswith("delete_"):
            assert tool.annotations.destructive_hint is True, name
        else:
            assert tool.annotations.destructive_hint is False, name
    for name in ("list_monitors", "get_monitor_data", "list_alerts", "whoami", "plot_monitor_data"):
        assert tools[name].annotations.read_only_hint is True, name  # type: ignore[union-attr]
    for name in ("create_monitor", "acknowledge_alert", "store_secret", "delete_channel"):
        assert tools[name].annotations.read_only_hint is False, name  # type: ignore[union-attr]
    assert tools["list_monitors"].output_schema is not None
    assert "monitors" in tools["list_monitors"].output_schema["properties"]
    kind = tools["create_monitor"].input_schema["properties"]["kind"]
    assert kind["enum"] == ["website", "crypto_price", "tcp", "dns", "heartbeat", "grpc_health"]
    # Only the calls that reach outside the deployment are open-world.
    open_world = {name for name, tool in tools.items() if tool.annotations.open_world_hint}  # type: ignore[union-attr]
    assert open_world == {"run_check_now", "test_channel", "request_login_code"}
    for name, tool in tools.items():
        # Unknown arguments are refused, and no schema carries pydantic's internal titles.
        assert tool.input_schema.get("additionalProperties") is False, name
        listing = json.dumps([tool.input_schema, tool.output_schema])
        assert '"title"' not in listing, name
        assert "Arguments" not in listing, name
        if tool.output_schema is not None:
            assert tool.output_schema["properties"]["result"] == {"type": "string"}, name
    assert "request_login_code" in (tools["whoami"].description or "")


async def test_read_only_flag_offers_only_read_tools(mcp_stack: McpStack) -> None:
    async with stdio_adapter(mcp_stack, "--read-only") as session:
        tools = (await session.list_tools()).tools
        names = {tool.name for tool in tools}
        assert {"list_monitors", "get_monitor_data", "whoami", "list_alerts"} <= names
        assert not names & {"create_monitor", "delete_monitor", "store_secret", "acknowledge_alert", "logout"}
        assert all(tool.annotations and tool.annotations.read_only_hint for tool in tools)
        # A hidden tool cannot be called either.
        assert "create_monitor" in await call_error(session, "create_monitor", kind="website", target="example.com")


# Login -----------------------------------------------------------------------------------------------------------


async def test_login_by_emailed_code_and_remembered_session(mcp_stack: McpStack, tmp_path: Path) -> None:
    address = "ada@example.com"
    session_file = tmp_path / "session.json"
    async with stdio_adapter(mcp_stack, "--remember", "--session-file", str(session_file)) as session:
        assert "request_login_code" in await call_error(session, "whoami")
        before = len(mcp_stack.mails_to(address))
        sent = await call(session, "request_login_code", email=address)
        assert sent["email"] == address
        assert sent["code_valid_for"]
        wrong = await call_error(session, "verify_login_code", email=address, code="000000")
        assert "login" in wrong.lower()
        code = mcp_stack.login_code(address, before)
        logged_in = await call(session, "verify_login_code", email=address, code=code)
        assert logged_in["email"] == address
        assert logged_in["remembered"] is True
        me = await call(session, "whoami")
        assert me == {
            "result": f"You are {address}.",
            "user_id": logged_in["user_id"],
            "email": address,
            "authenticated_by": "session",
        }
    # Remembered in a file only its owner can read, without the token ever appearing in a result.
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    token = json.loads(session_file.read_text())["session_token"]
    async with stdio_adapter(mcp_stack, "--remember", "--session-file", str(session_file)) as session:
        assert (await call(session, "whoami"))["email"] == address
        result = await session.call_tool("logout", {})
        assert not result.is_error
        assert token not in text_of(result)
        assert not session_file.exists()
        assert "request_login_code" in await call_error(session, "whoami")
    assert token not in (mcp_stack.logs / "stdio.log").read_text()


# Monitors and data -------------------------------------------------------------------------------------------------


async def test_bitcoin_price_monitor_from_creation_to_chart(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("satoshi@example.com")
    mcp_stack.market.price = "65000.00"
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        suggestions = await call(session, "suggest_monitors", text="bitcoin price")
        assert any(s["kind"] == "crypto_price" and s["target"] == "BTC-USD" for s in suggestions["suggestions"])

        steps: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            steps.append((progress, total, message))

        result = await session.call_tool(
            "create_monitor",
            {"kind": "crypto_price", "target": "btc", "interval": "1s", "providers": ["coinbase"],
             "add_suggested_alerts": True},
            progress_callback=on_progress,
        )  # fmt: skip
        assert not result.is_error, text_of(result)
        created = dict(result.structured_content or {})
        monitor = created["monitor"]
        assert monitor["kind"] == "crypto_price"
        assert monitor["target"] == "BTC-USD"
        assert monitor["interval"] == "1s"
        assert text_of(result).startswith(f"Created crypto_price monitor {monitor['id']}")
        # The text is the one-line summary; the data is the structured content, led by the same line.
        assert "\n" not in text_of(result)
        assert created["result"] == text_of(result)
        # Suggested rules are named after the monitor.
        assert all(rule["name"].startswith("BTC-USD price") for rule in created.get("alert_rules", []))
        # Three sub-steps: the monitor, the suggestions, the rules (made, or why not while AlertService is absent).
        assert [step[0] for step in steps] == [1, 2, 3]
        assert all(step[1] == 3 for step in steps)
        assert created.get("alert_rules") or "AlertService" in created["alert_rules_error"]

        check = await call(session, "run_check_now", monitor_id=monitor["id"])
        assert check["is_up"] is True
        assert check["fields"]["price"] == 65000.0

        async def has_samples() -> bool:
            data = await call(session, "get_monitor_data", monitor_id=monitor["id"], since="10m")
            return len(data["points"]) >= 3

        await eventually(has_samples, what="three price samples")
        mcp_stack.market.price = "71000.00"

        async def saw_new_price() -> bool:
            data = await call(session, "get_monitor_data", monitor_id=monitor["id"], since="10m")
            return bool(data["field"] == "price" and data["points"][-1]["v"] == 71000.0)

        await eventually(saw_new_price, what="the new price")
        # Aggregation is said, with why the window is wider than asked.
        windows = await call(
            session, "get_monitor_data", monitor_id=monitor["id"], since="10m", window="1s", max_points=2
        )
        assert windows["aggregation"] == "mean"
        assert windows["window"] != "1s"
        assert f"mean per {windows['window']} window (window widened from 1s to fit max_points=2)" in windows["result"]
        raw = await call(session, "get_monitor_data", monitor_id=monitor["id"], since="10m")
        assert "raw samples" in raw["result"]
        summary = await call(session, "summarize_monitor", monitor_id=monitor["id"], since="1h")
        assert summary["price"]["min"] == 65000.0
        assert summary["price"]["max"] == 71000.0
        # The fetches are counted (none failed here) and volatility comes in percent too.
        assert (summary["failed_checks"], summary["checks"] >= summary["samples"]) == (0, True)
        assert summary["price"]["volatility_percent"] == pytest.approx(summary["price"]["volatility"] * 100, abs=1e-3)
        analysis = await call(session, "get_crypto_analysis", symbol="BTC", since="1h")
        assert analysis["monitor_id"] == monitor["id"]
        assert analysis["stats"]["price"]["last"] == 71000.0
        assert analysis["hourly"]
        missing = await call_error(session, "get_crypto_analysis", symbol="ETH")
        assert "no monitor watches ETH-USD" in missing
        assert "create_monitor" in missing
        # A monitor without samples (the market knows no ETH) has no data, not a price of 0.00.
        eth = await call(session, "create_monitor", kind="crypto_price", target="ETH", providers=["coinbase"])
        empty = await session.call_tool("get_crypto_analysis", {"symbol": "ETH"})
        assert not empty.is_error, text_of(empty)
        assert text_of(empty).startswith("ETH-USD: no data yet over 24h")
        assert "The monitor is" in text_of(empty)
        assert "0.00" not in text_of(empty)
        assert "price" not in (empty.structured_content or {})["stats"]
        await call(session, "delete_monitor", monitor_id=eth["monitor"]["id"])

        chart = await session.call_tool("plot_monitor_data", {"monitor_id": monitor["id"], "since": "30m"})
        assert not chart.is_error, text_of(chart)
        images = [block for block in chart.content if isinstance(block, ImageContent)]
        assert len(images) == 1
        assert images[0].mime_type == "image/png"
        png = base64.b64decode(images[0].data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 5_000
        assert "price" in text_of(chart)

        status = await call(session, "get_monitor_status", monitor_id=monitor["id"])
        assert status["state"] == "up"
        overview = await call(session, "summarize_monitors", since="1h")
        assert (overview["total"], overview["states"]) == (1, {"up": 1})
        [health] = overview["monitors"]
        assert (health["monitor_id"], health["state"], health["failed_checks"]) == (monitor["id"], "up", 0)
        assert health["checks"] >= 3
        assert overview["result"].startswith("1 monitor(s) over 1h: 1 up")
        assert (await call(session, "summarize_monitors", labels={"team": "nobody"}))["total"] == 0
        deployment = await call(session, "get_deployment_status")
        assert any(r["runner_id"] == "mcp-runner" for r in deployment["runners"])

        updated = await call(session, "update_monitor", monitor_id=monitor["id"], interval="5s", name="Bitcoin")
        assert updated["interval"] == "5s"
        assert updated["name"] == "Bitcoin"
        assert (await call(session, "pause_monitor", monitor_id=monitor["id"]))["paused"] is True
        assert (await call(session, "get_monitor_status", monitor_id=monitor["id"]))["state"] == "paused"
        assert (await call(session, "resume_monitor", monitor_id=monitor["id"]))["paused"] is False
        listed = await call(session, "list_monitors")
        assert [m["id"] for m in listed["monitors"]] == [monitor["id"]]
        await call(session, "delete_monitor", monitor_id=monitor["id"])
        gone = await call_error(session, "get_monitor", monitor_id=monitor["id"])
        assert gone.endswith(f"monitor {monitor['id']} not found; call list_monitors to see your monitors")
        assert (await call(session, "list_monitors"))["monitors"] == []


async def test_website_outage_is_seen_and_summarised(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("shopkeeper@example.com")
    mcp_stack.website.up = True
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        created = await call(session, "create_monitor", kind="website", target=mcp_stack.website.url, interval="1s")
        monitor_id = created["monitor"]["id"]

        async def state_is(wanted: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return bool((await call(session, "get_monitor_status", monitor_id=monitor_id))["state"] == wanted)

            return check

        await eventually(await state_is("up"), what="the website UP")
        mcp_stack.website.up = False
        await eventually(await state_is("down"), what="the website DOWN")
        status = await call(session, "get_monitor_status", monitor_id=monitor_id)
        assert status["last_result"]["error_class"] == "status"
        mcp_stack.website.up = True
        await eventually(await state_is("up"), what="the website UP again")

        summary = await call(session, "summarize_monitor", monitor_id=monitor_id, since="1h")
        assert len(summary["outages"]) == 1
        assert summary["outages"][0]["end"]
        assert 0 < summary["uptime_percent"] < 100
        assert summary["failed_checks"] >= 1
        analysis = await call(session, "get_website_uptime_analysis", site=f"127.0.0.1:{mcp_stack.website.server.port}")
        assert analysis["monitor_id"] == monitor_id
        # Seven days asked of a monitor minutes old: the answer says since when there is data.
        assert f"data only since {created['monitor']['created']}" in analysis["result"]
        assert analysis["state"] == "up"
        assert len(analysis["stats"]["outages"]) == 1
        chart = await session.call_tool("plot_monitor_data", {"monitor_id": monitor_id, "since": "15m"})
        assert "1 DOWN period(s)" in text_of(chart)

        # The website's own settings change through update_monitor and show in get_monitor.
        updated = await call(
            session,
            "update_monitor",
            monitor_id=monitor_id,
            keyword="shop is open",
            expected_status="200-299,301",
            headers={"X-Shop": "yes"},
            cert_expiry_days=14,
        )
        assert updated["result"] == f"Updated {monitor_id} (headers, expected_status, keyword, cert_expiry_days)."
        shown = await call(session, "get_monitor", monitor_id=monitor_id)
        assert shown["keyword"] == "shop is open"
        assert shown["expected_status"] == "200-299,301"
        assert shown["header_names"] == ["X-Shop"]
        assert shown["cert_expiry_days"] == 14
        assert "keyword present: 'shop is open'" in shown["result"]
        assert (await call(session, "run_check_now", monitor_id=monitor_id))["is_up"] is True
        await call(session, "update_monitor", monitor_id=monitor_id, keyword="closed for good")
        down = await call(session, "run_check_now", monitor_id=monitor_id)
        assert down["is_up"] is False
        await call(session, "delete_monitor", monitor_id=monitor_id)


async def test_errors_name_the_field_and_the_way_out(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("typo@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        bad_url = await call_error(session, "create_monitor", kind="website", target="ftp://example.com")
        assert "invalid argument" in bad_url
        assert "spec.website.url" in bad_url
        bad_unit = await call_error(session, "create_monitor", kind="website", target="example.com", interval="soon")
        assert "interval" in bad_unit
        assert "5m" in bad_unit
        bad_kind = await call_error(session, "create_monitor", kind="ping", target="example.com")
        assert "kind" in bad_kind
        assert "errors.pydantic.dev" not in bad_kind
        assert "kind should be 'website', 'crypto_price'" in bad_kind
        assert 'not "ping"' in bad_kind
        missing = await call_error(session, "summarize_monitor", monitor_id="mon_nope")
        assert "monitor mon_nope not found; call list_monitors" in missing
        # A deployment's minimum interval (1s here) says what to ask for, not to delete something.
        too_often = await call_error(session, "create_monitor", kind="website", target="example.com", interval="500ms")
        assert "monitor.interval: this deployment checks at most every 1s; ask for 1s or more" in too_often
        assert "delete" not in too_often
        # An argument the tool does not take is refused, naming the ones it does.
        unknown = await call_error(session, "update_monitor", monitor_id="mon_nope", colour="red")
        assert "update_monitor has no argument colour" in unknown
        assert "keyword" in unknown
        assert "Error executing tool" not in unknown
    # Services down: the error says which and where, and what to do.
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, MONITORS_MONITOR_TARGET=f"127.0.0.1:{free_port()}") as s:
        unreachable = await call_error(s, "list_monitors")
        assert "cannot reach MonitorService at 127.0.0.1:" in unreachable
        assert "retry" in unreachable


async def test_list_summaries_say_how_many_more(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("collector@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        ids = [
            (await call(session, "create_monitor", kind="heartbeat", name=f"job {i}"))["monitor"]["id"]
            for i in range(12)
        ]
        listed = await call(session, "list_monitors")
        assert len(listed["monitors"]) == 12
        assert listed["result"].endswith(", and 2 more.")
        paged = await call(session, "list_monitors", page_size=5)
        assert "more on the next page" in paged["result"]
        # A website setting on a heartbeat monitor is refused, naming it.
        refused = await call_error(session, "update_monitor", monitor_id=ids[0], keyword="ok")
        assert "keyword: only a website monitor has it" in refused
        for monitor_id in ids:
            await call(session, "delete_monitor", monitor_id=monitor_id)


async def test_secrets_are_write_only_and_channels_deliver(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("keeper@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        stored = await call(session, "store_secret", name="SHOP_TOKEN", value="s3cr3t-value")
        assert stored["reference"] == "{{secret:SHOP_TOKEN}}"
        listed = await session.call_tool("list_secrets", {})
        assert [s["name"] for s in (listed.structured_content or {})["secrets"]] == ["SHOP_TOKEN"]
        assert "s3cr3t-value" not in text_of(listed)
        monitor = await call(
            session,
            "create_monitor",
            kind="website",
            target=mcp_stack.website.url,
            headers={"Authorization": "Bearer {{secret:SHOP_TOKEN}}"},
        )
        in_use = await call_error(session, "delete_secret", name="SHOP_TOKEN")
        assert "cannot do that now" in in_use
        await call(session, "delete_monitor", monitor_id=monitor["monitor"]["id"])
        await call(session, "delete_secret", name="SHOP_TOKEN")
        assert (await call(session, "list_secrets"))["secrets"] == []
        assert "secret NOPE not found; call list_secrets" in await call_error(session, "delete_secret", name="NOPE")

        channel = await call(session, "create_channel", kind="email", destination="keeper@example.com")
        assert channel["kind"] == "email"
        assert channel["is_default"] is True
        assert (await call(session, "list_channels"))["channels"][0]["id"] == channel["id"]
        delivery = await call(session, "test_channel", channel_id=channel["id"])
        assert delivery["kind"] == "test"

        async def delivered() -> bool:
            deliveries = await call(session, "list_deliveries", channel_id=channel["id"])
            return any(d["state"] == "delivered" for d in deliveries["deliveries"])

        await eventually(delivered, what="the test email delivered")
        await call(session, "delete_channel", channel_id=channel["id"])
        assert (await call(session, "list_channels"))["channels"] == []


async def test_alert_tools_answer_from_alert_service_or_say_clearly_it_is_missing(mcp_stack: McpStack) -> None:
    """Until AlertService lands it answers UNIMPLEMENTED, which the tools turn into a clear error; afterwards the
    same calls succeed."""
    key = mcp_stack.stack.create_api_key("early@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        for tool, arguments in (("list_alert_rules", {}), ("list_alerts", {"status": "all"}), ("list_silences", {})):
            result = await session.call_tool(tool, arguments)
            if result.is_error:
                assert "AlertService at 127.0.0.1:" in text_of(result)
                assert "UNIMPLEMENTED" in text_of(result)
            else:
                assert result.structured_content is not None
        unknown = await session.call_tool("get_alert", {"alert_id": "alt_nope"})
        assert unknown.is_error
        assert "UNIMPLEMENTED" in text_of(unknown) or "alert alt_nope not found; call list_alerts" in text_of(unknown)


# HTTP ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_adapter(mcp_stack: McpStack) -> Iterator[HttpAdapter]:
    adapter = HttpAdapter(mcp_stack)
    try:
        yield adapter
    finally:
        adapter.stop()


async def test_over_http_each_client_acts_as_its_own_user(mcp_stack: McpStack, http_adapter: HttpAdapter) -> None:
    alice_key = mcp_stack.stack.create_api_key("alice@example.com")
    bob_key = mcp_stack.stack.create_api_key("bob@example.com")
    async with http_adapter.session(alice_key) as alice, http_adapter.session(bob_key) as bob:
        listed = {tool.name: tool for tool in (await alice.list_tools()).tools}
        tools = set(listed)
        assert "create_monitor" in tools
        assert "whoami" in tools
        assert not tools & {"request_login_code", "verify_login_code", "logout"}
        # Nothing points at a tool this transport does not offer.
        assert all("request_login_code" not in (tool.description or "") for tool in listed.values())
        assert (await call(alice, "whoami"))["email"] == "alice@example.com"
        assert (await call(bob, "whoami"))["email"] == "bob@example.com"
        created = await call(alice, "create_monitor", kind="website", target="https://alice.example")
        monitor_id = created["monitor"]["id"]
        assert [m["id"] for m in (await call(alice, "list_monitors"))["monitors"]] == [monitor_id]
        assert (await call(bob, "list_monitors"))["monitors"] == []
        assert f"monitor {monitor_id} not found" in await call_error(bob, "get_monitor", monitor_id=monitor_id)
        assert f"monitor {monitor_id} not found" in await call_error(bob, "delete_monitor", monitor_id=monitor_id)
        assert [m["id"] for m in (await call(alice, "list_monitors"))["monitors"]] == [monitor_id]
        await call(alice, "delete_monitor", monitor_id=monitor_id)
    log = http_adapter.log_path.read_text()
    assert alice_key not in log
    assert bob_key not in log


async def test_http_refuses_clients_without_a_valid_key(mcp_stack: McpStack, http_adapter: HttpAdapter) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as client:
        for presented in ({}, {"authorization": "Bearer not-a-real-key"}):
            answer = await client.post(f"{http_adapter.base_url}/mcp", json=body, headers={**headers, **presented})
            assert answer.status_code == 401, answer.text
            assert "invalid_token" in answer.headers.get("www-authenticate", "")


def test_tool_results_carry_no_protobuf_dump() -> None:
    """The views drop empty fields and name enums plainly."""
    from mcp_adapter.views import monitor_view
    from monitors.v1 import common_pb2, monitor_service_pb2

    monitor = monitor_service_pb2.Monitor(
        id="mon_1", display_name="Shop", spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://x"))
    )
    monitor.interval.seconds = 90
    assert monitor_view(monitor).model_dump(exclude_none=True) == {
        "id": "mon_1",
        "name": "Shop",
        "kind": "website",
        "target": "https://x",
        "interval": "1m30s",
        "paused": False,
    }


def test_human_units() -> None:
    from datetime import UTC, datetime, timedelta

    from mcp_adapter.errors import AdapterError
    from mcp_adapter.units import parse_duration, parse_number, parse_time

    assert parse_duration("5m", "x") == timedelta(minutes=5)
    assert parse_duration("1h30m", "x") == timedelta(minutes=90)
    assert parse_duration("90", "x") == timedelta(seconds=90)
    assert parse_number("70k", "x") == 70_000
    assert parse_number("70,000", "x") == 70_000
    assert parse_number("$1.5M", "x") == 1_500_000
    now = datetime.now(UTC)
    assert parse_time("24h", "since", now) == now - timedelta(hours=24)
    with pytest.raises(AdapterError, match="since"):
        parse_time("yesterday-ish", "since", now)


def environment_without_monitors(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("MONITORS_")}


async def test_a_cron_heartbeat_is_created_and_its_pings_are_read(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("nightly.jobs@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key) as session:
        created = await call(
            session,
            "create_monitor",
            kind="heartbeat",
            name="nightly backup",
            cron="0 3 * * *",
            time_zone="Europe/Paris",
            grace_period="30m",
            add_suggested_alerts=True,
        )
        monitor = created["monitor"]
        got = await call(session, "get_monitor", monitor_id=monitor["id"])
        assert got["heartbeat_url"] == monitor["heartbeat_url"]
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(monitor["heartbeat_url"] + "/start")).status_code == 200
            done = await client.post(monitor["heartbeat_url"] + "/0", content=b"backed up 12 GB")
            assert done.status_code == 200
        pings = await call(session, "list_heartbeat_pings", monitor_id=monitor["id"])
        assert [(p["kind"], p.get("exit_status"), p.get("body")) for p in pings["pings"]] == [
            ("success", 0, "backed up 12 GB"),
            ("start", None, None),
        ]
        assert pings["result"].startswith(f"2 ping(s) of {monitor['id']}, latest success at ")
        # SuggestMonitors read 'heartbeat ...' as a job and suggested its down rule, which the account's default
        # rule already covers (before, that request named nothing it knew).
        assert "already alerts when a monitor it watches" in created["alert_rules_note"]
