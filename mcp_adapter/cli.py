"""`monitors-mcp` (or `python -m mcp_adapter`): run the MCP adapter over stdio or streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import anyio

from mcp_adapter import VERSION
from mcp_adapter.clients import Targets
from mcp_adapter.identity import default_session_file
from mcp_adapter.server import AdapterConfig, build_server


def parse_args(argv: Sequence[str] | None = None) -> AdapterConfig:
    parser = argparse.ArgumentParser(
        prog="monitors-mcp",
        description="MCP server for monitors: every capability as tools for Claude. Over stdio it acts as one "
        "person (login tools, or MONITORS_API_KEY); over HTTP each client presents its own API key as a bearer "
        "token.",
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    parser.add_argument("--public-url", default="", help="the URL clients reach the HTTP adapter at, if proxied")
    parser.add_argument("--read-only", action="store_true", help="offer only tools that change nothing")
    parser.add_argument(
        "--remember", action="store_true", help="stdio: keep the login session in a 0600 file across restarts"
    )
    parser.add_argument("--session-file", type=Path, default=None, help="where --remember keeps it")
    parser.add_argument("--monitor-target", help="MonitorService/AccountService host:port (MONITORS_MONITOR_TARGET)")
    parser.add_argument("--alert-target", help="AlertService host:port (MONITORS_ALERT_TARGET)")
    parser.add_argument("--notify-target", help="NotificationService host:port (MONITORS_NOTIFY_TARGET)")
    parser.add_argument("--version", action="version", version=f"monitors-mcp {VERSION}")
    args = parser.parse_args(argv)
    targets = Targets.from_env()
    targets = replace(
        targets,
        monitor=args.monitor_target or targets.monitor,
        alert=args.alert_target or targets.alert,
        notify=args.notify_target or targets.notify,
    )
    return AdapterConfig(
        transport=args.transport,
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        targets=targets,
        api_key=os.environ.get("MONITORS_API_KEY", ""),
        session_file=(args.session_file or default_session_file()) if args.remember else None,
        public_url=args.public_url.rstrip("/"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # stdout is the wire over stdio: everything else goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("MONITORS_LOG_LEVEL", "WARNING").upper())
    server = build_server(config)
    try:
        if config.transport == "stdio":
            anyio.run(server.run_stdio_async)
        else:
            print(f"monitors-mcp: streamable HTTP on {config.url}/mcp", file=sys.stderr, flush=True)
            anyio.run(lambda: server.run_streamable_http_async(host=config.host, port=config.port))
    except KeyboardInterrupt:
        pass
    return 0
