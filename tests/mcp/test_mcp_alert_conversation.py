"""The seeds' alert conversations through the MCP adapter, end to end against the real stack: "create a Bitcoin
price monitor", "alert me if it goes above 70,000", the price crosses, "show recent alerts", "acknowledge it";
and a website outage with its firing and resolved notices.
"""

from __future__ import annotations

import re

from mcp.client import ClientSession

from harness.mcp import McpStack, call, call_error, eventually, stdio_adapter, text_of


async def create_rule(session: ClientSession, **arguments: object) -> dict[str, object]:
    return await call(session, "create_alert_rule", **arguments)


async def test_bitcoin_above_70k_fires_shows_and_is_acknowledged(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("trader@example.com")
    mcp_stack.market.price = "65000.00"
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="conversation") as session:
        # "Create a Bitcoin price monitor."
        created = await call(
            session, "create_monitor", kind="crypto_price", target="BTC", interval="1s", providers=["coinbase"]
        )
        monitor_id = created["monitor"]["id"]
        await call(session, "create_channel", kind="email", destination="trader@example.com")
        # "Alert me if it goes above 70,000."
        rule = await create_rule(
            session, condition="threshold", monitor_id=monitor_id, operator=">", value="70,000", severity="critical"
        )
        assert rule["condition"] == "last price > 70000"
        trial = await call(session, "test_alert_rule", rule_id=rule["id"])
        assert trial["would_fire"] is False

        mcp_stack.market.price = "71250.00"

        async def firing() -> bool:
            alerts = await call(session, "list_alerts", rule_id=rule["id"])
            return any(a["state"] == "firing" for a in alerts["alerts"])

        await eventually(firing, timeout_s=60, what="the 70k alert firing")
        # "Show recent alerts."
        recent = await call(session, "list_alerts", status="all")
        alert = next(a for a in recent["alerts"] if a["rule_id"] == rule["id"])
        assert alert["monitor_id"] == monitor_id
        assert alert["value"] == 71250.0
        assert alert["threshold"] == 70000.0
        # "Acknowledge it."
        acknowledged = await call(session, "acknowledge_alert", alert_id=alert["id"], comment="watching it")
        assert acknowledged["state"] == "acknowledged"
        assert acknowledged["acknowledged_by"]
        detail = await call(session, "get_alert", alert_id=alert["id"])
        assert [e["transition"] for e in detail["events"]][-1] == "acknowledged"

        async def notified() -> bool:
            return any("70" in mail for mail in mcp_stack.mails_to("trader@example.com"))

        await eventually(notified, what="the firing email")
        chart = await session.call_tool("plot_monitor_data", {"monitor_id": monitor_id, "since": "30m"})
        assert "1 alert(s) marked" in text_of(chart)
        await call(session, "delete_monitor", monitor_id=monitor_id)


async def test_website_outage_fires_then_resolves_with_a_notice(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("webmaster@example.com")
    mcp_stack.website.up = True
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="conversation") as session:
        channel = await call(session, "create_channel", kind="email", destination="webmaster@example.com")
        created = await call(session, "create_monitor", kind="website", target=mcp_stack.website.url, interval="1s")
        monitor_id = created["monitor"]["id"]
        rule = await create_rule(session, condition="monitor_down", monitor_id=monitor_id, channel_ids=[channel["id"]])
        mcp_stack.website.up = False

        async def alert_in(state: str) -> bool:
            alerts = await call(session, "list_alerts", status="all", rule_id=rule["id"])
            return any(a["state"] == state for a in alerts["alerts"])

        await eventually(lambda: alert_in("firing"), timeout_s=60, what="the outage alert firing")
        mcp_stack.website.up = True
        await eventually(lambda: alert_in("resolved"), timeout_s=60, what="the outage alert resolved")

        async def resolved_notice_delivered() -> bool:
            deliveries = await call(session, "list_deliveries", channel_id=channel["id"])
            return any(d["kind"] == "alert_resolved" and d["state"] == "delivered" for d in deliveries["deliveries"])

        await eventually(resolved_notice_delivered, timeout_s=60, what="the resolved notice delivered")
        await call(session, "delete_monitor", monitor_id=monitor_id)


async def test_suggested_alerts_leave_outages_to_the_default_rule_and_rules_say_what_they_watch(
    mcp_stack: McpStack,
) -> None:
    key = mcp_stack.stack.create_api_key("owner@example.com")
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="conversation") as session:
        # A new account's first monitor: its default rule "A monitor is down" covers it, so no second down rule.
        result = await session.call_tool(
            "create_monitor",
            {"kind": "website", "target": mcp_stack.website.url, "name": "Shop", "labels": {"team": "web"},
             "add_suggested_alerts": True},
        )  # fmt: skip
        assert not result.is_error, text_of(result)
        created = dict(result.structured_content or {})
        shop = created["monitor"]["id"]
        assert created["alert_rules"], created
        assert all(rule["condition"] != "monitor is DOWN" for rule in created["alert_rules"])
        assert all(rule["name"].startswith("Shop ") for rule in created["alert_rules"])
        assert "A monitor is down" in created["alert_rules_note"]
        assert "already alerts when a monitor it watches (all monitors) goes down" in text_of(result)
        rules = (await call(session, "list_alert_rules"))["alert_rules"]
        assert sum(rule["condition"] == "monitor is DOWN" for rule in rules) == 1

        # Scope: all monitors, by label, or one monitor, said in the result.
        everywhere = await create_rule(
            session, condition="threshold", field="response_time_ms", operator=">", value="5000"
        )
        assert everywhere["watches"] == "all monitors"
        assert "on all monitors" in str(everywhere["result"])
        labelled = await create_rule(session, condition="no_data", no_data_for="10m", monitor_selector={"team": "web"})
        assert labelled["watches"] == "monitors labelled team=web"
        own = await create_rule(session, condition="threshold", monitor_id=shop, operator=">", value="2000")
        assert own["watches"] == f"monitor Shop ({shop})"
        assert own["condition"] == "last response_time_ms > 2000"
        other = await call(session, "create_monitor", kind="heartbeat", name="Backup job")
        await create_rule(session, condition="monitor_down", monitor_id=other["monitor"]["id"])
        # Without a monitor the field cannot be guessed: the error says so.
        no_field = await call_error(session, "create_alert_rule", condition="threshold", operator=">", value="1")
        assert "field" in no_field
        assert "monitor_id" in no_field

        # Every rule that applies to Shop, and how; not the backup job's own rule.
        applying = await call(session, "list_alert_rules", monitor_id=shop)
        how = {rule["id"]: rule["applies"] for rule in applying["alert_rules"]}
        assert how[everywhere["id"]] == "over all monitors"
        assert how[labelled["id"]] == "by its labels (team=web)"
        assert how[own["id"]] == "this monitor's own rule"
        default = next(rule for rule in applying["alert_rules"] if rule.get("is_default"))
        assert how[default["id"]] == "default rule, over all monitors"
        assert len(how) == 3 + 1 + len(created["alert_rules"])

        # Testing an unsaved rule over labelled monitors no monitor has.
        nothing = await call(session, "test_alert_rule", condition="monitor_down", monitor_selector={"team": "nobody"})
        assert nothing["evaluations"] == []
        assert nothing["result"].startswith("Nothing to evaluate: the rule watches monitors labelled team=nobody")
        tested = await call(session, "test_alert_rule", rule_id=everywhere["id"])
        assert tested["watches"] == "all monitors"
        assert {e["monitor_name"] for e in tested["evaluations"]} == {"Shop", "Backup job"}
        await call(session, "delete_monitor", monitor_id=shop)
        await call(session, "delete_monitor", monitor_id=other["monitor"]["id"])


async def test_pending_alert_and_silences_explain_themselves(mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("patient@example.com")
    mcp_stack.market.price = "65000.00"
    async with stdio_adapter(mcp_stack, MONITORS_API_KEY=key, log_name="conversation") as session:
        created = await call(
            session, "create_monitor", kind="crypto_price", target="BTC", interval="1s", providers=["coinbase"]
        )
        monitor_id = created["monitor"]["id"]
        rule = await create_rule(
            session, condition="threshold", monitor_id=monitor_id, operator=">", value="1", for_duration="1h"
        )

        async def pending() -> bool:
            alerts = await call(session, "list_alerts", rule_id=rule["id"])
            return any(a["state"] == "pending" for a in alerts["alerts"])

        await eventually(pending, timeout_s=60, what="the alert pending")
        alert = (await call(session, "list_alerts", rule_id=rule["id"]))["alerts"][0]
        refused = await call_error(session, "acknowledge_alert", alert_id=alert["id"])
        assert "is pending, not firing" in refused
        assert "fires, or clears, by itself" in refused
        assert f"create_silence with rule_id={rule['id']}" in refused

        clock = await call_error(session, "create_silence", starts="22:00", duration="1h", rule_id=rule["id"])
        assert "clock time without a date or time zone" in clock
        assert re.search(r"\d{4}-\d\d-\d\dT22:00:00\+01:00", clock)
        nightly = await call(session, "create_silence", cron_schedule="0 22 * * *", duration="1h", rule_id=rule["id"])
        assert nightly["time_zone"] == "UTC"
        assert 'on schedule "0 22 * * *" in UTC, each window lasting 1h' in nightly["result"]
        # The next window is read back: a 22:00 UTC start within the next day.
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT22:00:00Z", str(nightly["next_window"]))
        assert f"next window from {nightly['next_window']}" in nightly["result"]
        listed = await call(session, "list_silences")
        assert f'rule {rule["id"]} on schedule "0 22 * * *" in UTC ({nightly["id"]})' in listed["result"]
        await call(session, "delete_monitor", monitor_id=monitor_id)
