"""What the adapter's answers say when the request is ambiguous or names nothing, and what its one-line results
lead with: a monitor named by free text is resolved by id, name or URL, never silently one of several; heartbeats
are described by their schedule; silences have an explicit scope. Against the real stack (harness)."""

from __future__ import annotations

import re

from harness.mcp import McpStack, call, call_error, eventually, stdio_adapter


async def test_a_site_is_found_by_id_name_or_url_and_several_matches_are_listed(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("sites@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        shop, admin, news = [
            (await call(session, "create_monitor", kind="website", target=url, name=name, interval="1h"))["monitor"]
            for name, url in (
                ("Shop", "https://shop.example/"),
                ("Shop admin", "https://shop.example/admin"),
                ("Company news", "https://blog.example/"),
            )
        ]
        ambiguous = await call_error(session, "get_website_uptime_analysis", site="shop.example")
        assert "matches 2 monitors" in ambiguous
        assert f"Shop ({shop['id']}, https://shop.example/)" in ambiguous
        assert f"Shop admin ({admin['id']}, https://shop.example/admin)" in ambiguous
        assert "call again with its id as site" in ambiguous
        # An exact name wins over the names and URLs it is part of; a name is matched, not only URLs.
        for site, meant in (("shop", shop), ("company news", news), ("admin", admin), (admin["id"], admin)):
            analysis = await call(session, "get_website_uptime_analysis", site=site)
            assert analysis["monitor_id"] == meant["id"], site
            assert analysis["result"].startswith(f"{meant['name']} ({meant['id']}, https://"), analysis["result"]
        missing = await call_error(session, "get_website_uptime_analysis", site="nothing-like-it")
        assert "no website monitor matches 'nothing-like-it' by id, name or URL" in missing
        for monitor in (shop, admin, news):
            await call(session, "delete_monitor", monitor_id=monitor["id"])


async def test_two_monitors_of_one_coin_are_listed_for_the_person_to_pick(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("two.coins@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        coin = {"kind": "crypto_price", "target": "BTC", "providers": ["coinbase"]}
        first, second = [
            (await call(session, "create_monitor", name=name, **coin))["monitor"]
            for name in ("Bitcoin", "Bitcoin again")
        ]
        ambiguous = await call_error(session, "get_crypto_analysis", symbol="BTC")
        assert "matches 2 monitors" in ambiguous
        assert f"Bitcoin again ({second['id']}, BTC-USD)" in ambiguous
        assert (await call(session, "get_crypto_analysis", symbol=second["id"]))["monitor_id"] == second["id"]
        assert (await call(session, "get_crypto_analysis", symbol="bitcoin"))["monitor_id"] == first["id"]
        for monitor in (first, second):
            await call(session, "delete_monitor", monitor_id=monitor["id"])


async def test_a_heartbeat_is_shown_by_its_schedule_with_ping_recipes_and_its_schedule_changes(
    mcp_stack: McpStack,
) -> None:
    key = mcp_stack.stack.create_api_key("cron.jobs@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        created = await call(
            session,
            "create_monitor",
            kind="heartbeat",
            name="nightly backup",
            cron="0 3 * * *",
            time_zone="Europe/Paris",
            grace_period="30m",
        )
        monitor = created["monitor"]
        url = monitor["heartbeat_url"]
        assert monitor["schedule"] == "cron 0 3 * * * Europe/Paris, grace 30m"
        assert "interval" not in monitor
        for line in (created["result"], (await call(session, "get_monitor", monitor_id=monitor["id"]))["result"]):
            assert "cron 0 3 * * * Europe/Paris, grace 30m" in line
            assert "every" not in line
            assert f"curl -fsS -m 10 --retry 5 {url} at the end" in line
            assert f"{url}/start at its start" in line
            assert f"{url}/$? or {url}/fail at the end" in line
        assert f"curl -fsS -m 10 --retry 5 {url}/start" in " ".join(monitor["ping"])

        moved = await call(
            session,
            "update_monitor",
            monitor_id=monitor["id"],
            cron="30 4 * * 1-5",
            time_zone="America/New_York",
            grace_period="1h",
        )
        assert moved["schedule"] == "cron 30 4 * * 1-5 America/New_York, grace 1h"
        assert moved["result"].endswith(
            "(cron, time_zone, grace_period): cron 30 4 * * 1-5 America/New_York, grace 1h."
        )
        shown = await call(session, "get_monitor", monitor_id=monitor["id"])
        assert shown["schedule"] == "cron 30 4 * * 1-5 America/New_York, grace 1h"
        # Back to a ping every interval: the zone goes with the schedule.
        fixed = await call(session, "update_monitor", monitor_id=monitor["id"], cron="", interval="1h")
        assert fixed["schedule"] == "a ping every 1h, grace 1h"
        refused = await call_error(session, "update_monitor", monitor_id=monitor["id"], time_zone="Europe/Paris")
        assert "time_zone" in refused
        website = await call(session, "create_monitor", kind="website", target="https://jobs.example", interval="1h")
        wrong = await call_error(session, "update_monitor", monitor_id=website["monitor"]["id"], cron="0 3 * * *")
        assert "cron: only a heartbeat monitor has it" in wrong
        for monitor_id in (monitor["id"], website["monitor"]["id"]):
            await call(session, "delete_monitor", monitor_id=monitor_id)


async def test_a_silence_names_what_it_silences_and_everything_is_asked_for_explicitly(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("quiet@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        shop = (await call(session, "create_monitor", kind="website", target="https://quiet.example", name="Shop"))[
            "monitor"
        ]
        unscoped = await call_error(session, "create_silence", duration="1h")
        assert "say what to silence: monitor_id" in unscoped
        assert "all=true for every monitor" in unscoped
        assert (await call(session, "list_silences"))["silences"] == []
        by_name = await call_error(session, "create_silence", monitor_id="Shop")
        assert by_name.endswith("monitor Shop not found; call list_monitors to see your monitors")
        no_rule = await call_error(session, "create_silence", rule_id="rule_nope")
        assert "alert rule rule_nope not found; call list_alert_rules" in no_rule
        both = await call_error(session, "create_silence", monitor_id=shop["id"], all=True)
        assert "give it alone" in both
        one = await call(session, "create_silence", monitor_id=shop["id"], duration="1h")
        assert one["result"].startswith(f"Silenced Shop ({shop['id']}) until ")
        everything = await call(session, "create_silence", all=True, duration="1h")
        assert everything["result"].startswith("Silenced all monitors until ")
        for silence in (one, everything):
            await call(session, "delete_silence", silence_id=silence["id"])
        await call(session, "delete_monitor", monitor_id=shop["id"])


async def test_alerts_of_a_monitor_or_rule_that_does_not_exist_are_not_found_rather_than_none(
    mcp_stack: McpStack,
) -> None:
    key = mcp_stack.stack.create_api_key("alerts.of@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        shop = (await call(session, "create_monitor", kind="website", target="https://alerts.example", name="Shop"))[
            "monitor"
        ]
        by_name = await call_error(session, "list_alerts", monitor_id="Shop")
        assert by_name.endswith("monitor Shop not found; call list_monitors to see your monitors")
        no_rule = await call_error(session, "list_alerts", rule_id="rule_nope", status="all")
        assert no_rule.endswith("alert rule rule_nope not found; call list_alert_rules to see your alert rules")
        none = await call(session, "list_alerts", monitor_id=shop["id"], status="all")
        assert none["result"] == f"0 alert(s) of Shop ({shop['id']})."
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        arguments = tools["list_alerts"].input_schema["properties"]
        assert "list_monitors" in arguments["monitor_id"]["description"]
        assert "list_alert_rules" in arguments["rule_id"]["description"]
        await call(session, "delete_monitor", monitor_id=shop["id"])


async def test_one_line_results_lead_with_the_monitors_name_and_a_down_says_why(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("named@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        # The website stand-in answers 200, which this monitor does not accept: it goes DOWN.
        shop = (
            await call(
                session,
                "create_monitor",
                kind="website",
                target=mcp_stack.website.url,
                name="Shop",
                interval="1s",
                expected_status="201",
            )
        )["monitor"]
        check = await call(session, "run_check_now", monitor_id=shop["id"])
        assert check["result"].startswith(f"Shop ({shop['id']}) is DOWN (status: ")

        async def down() -> bool:
            return bool((await call(session, "get_monitor_status", monitor_id=shop["id"]))["state"] == "down")

        await eventually(down, what="the shop DOWN")
        status = await call(session, "get_monitor_status", monitor_id=shop["id"])
        assert status["name"] == "Shop"
        assert re.fullmatch(rf"Shop \({shop['id']}\) is DOWN since \S+: status: .+\.", status["result"])
        assert status["last_result"]["message"] in status["result"]
        silence = await call(session, "create_silence", monitor_id=shop["id"], duration="1h")
        listed = await call(session, "list_silences")
        assert listed["result"].startswith(f"1 silence(s): Shop ({shop['id']}) until {silence['end']} ({silence['id']}")
        assert listed["silences"][0]["monitor_name"] == "Shop"
        assert (await call(session, "pause_monitor", monitor_id=shop["id"]))["result"] == f"Paused Shop ({shop['id']})."
        await call(session, "delete_silence", silence_id=silence["id"])
        await call(session, "delete_monitor", monitor_id=shop["id"])


async def test_suggested_alerts_include_the_threshold_the_person_asked_for(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("above70k@example.com")
    asked = "alert me if Bitcoin goes above $70,000"
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="answers") as session:
        suggested = await call(session, "suggest_monitors", text=asked)
        [coin] = [s for s in suggested["suggestions"] if s["kind"] == "crypto_price"]
        assert any(rule["condition"].endswith("price > 70000") for rule in coin["alert_rules"])
        created = await call(
            session,
            "create_monitor",
            kind="crypto_price",
            target=coin["target"],
            providers=["coinbase"],
            add_suggested_alerts=True,
            request=asked,
        )
        conditions = [rule["condition"] for rule in created["alert_rules"]]
        assert any(condition.endswith("price > 70000") for condition in conditions), conditions
        assert "No price threshold" not in created["result"]
        # Without the person's words no price is known: the answer says so and gives the call that adds one.
        plain = await call(
            session,
            "create_monitor",
            kind="crypto_price",
            target="ETH",
            providers=["coinbase"],
            add_suggested_alerts=True,
        )
        plain_id = plain["monitor"]["id"]
        assert "No price threshold was created" in plain["result"]
        assert f'create_alert_rule(condition="threshold", monitor_id="{plain_id}", operator=">"' in plain["result"]
        for rule in created["alert_rules"] + plain["alert_rules"]:
            await call(session, "delete_alert_rule", rule_id=rule["id"])
        for monitor_id in (created["monitor"]["id"], plain_id):
            await call(session, "delete_monitor", monitor_id=monitor_id)


def test_a_rule_not_created_is_given_as_the_create_alert_rule_call_that_makes_it() -> None:
    from mcp_adapter.tools.monitors import create_rule_call
    from monitors.v1 import alert_service_pb2, common_pb2

    rule = alert_service_pb2.AlertRule(
        display_name="BTC-USD price above 70,000",
        monitor_id="mon_1",
        severity=common_pb2.SEVERITY_WARNING,
        condition=common_pb2.AlertCondition(
            threshold=common_pb2.ThresholdCondition(
                field="price", operator=common_pb2.COMPARISON_OPERATOR_GREATER_THAN, value=70000
            )
        ),
    )
    assert create_rule_call(rule) == (
        'create_alert_rule(condition="threshold", monitor_id="mon_1", field="price", operator=">", value=70000.0, '
        'severity="warning", name="BTC-USD price above 70,000")'
    )
