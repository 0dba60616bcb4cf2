"""What the adapter's answers say when the request is ambiguous or names nothing, and what its one-line results
lead with: a monitor named by free text is resolved by id, name or URL, never silently one of several; heartbeats
are described by their schedule; silences have an explicit scope. Against the real stack (tests.harness)."""

from __future__ import annotations

from tests.test_mcp_adapter import McpStack, call, call_error, mcp_stack, stdio_adapter

__all__ = ["mcp_stack"]  # the shared fixture, imported for this module


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
