"""Check settings pointing at the tests' local stand-ins."""

from __future__ import annotations

from services.monitor_svc.checks.crypto import ProviderConfig
from tests.harness.http import HttpServer


def providers(server: HttpServer) -> ProviderConfig:
    return ProviderConfig({name: server.url("").rstrip("/") for name in ("coinbase", "binance", "kraken", "coingecko")})
