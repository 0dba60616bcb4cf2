"""Check settings pointing at the tests' local stand-ins."""

from __future__ import annotations

from harness.http import HttpServer
from services.monitor_svc.checks.crypto import ProviderConfig


def providers(server: HttpServer) -> ProviderConfig:
    return ProviderConfig({name: server.url("").rstrip("/") for name in ("coinbase", "binance", "kraken", "coingecko")})
