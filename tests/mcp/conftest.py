"""The MCP room's fixture: one stack (services, a runner, the stand-ins) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.mcp import Market, McpStack, Website
from harness.services import Stack


@pytest.fixture(scope="module")
def mcp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpStack]:
    market, website = Market(), Website()
    with market.server, website.server:
        settings = {
            "MONITORS_MIN_INTERVAL_S": "1",
            "MONITORS_EGRESS": "private-allowed",
            "MONITORS_PROVIDER_COINBASE_URL": market.server.url("").rstrip("/"),
        }
        with Stack(tmp_path_factory.mktemp("mcp"), settings) as stack:
            runner = stack.runner("mcp-runner")
            runner.start()
            try:
                yield McpStack(stack, runner, market, website)
            finally:
                runner.stop()
