"""The crypto price check: a pair's spot price from public APIs, in the monitor's fallback order.

Provider base URLs are the operator's (MONITORS_PROVIDER_<NAME>_URL), not users', so they are fetched with a
plain client, not through the egress policy. Each provider's documented response shape is parsed strictly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.domain import CryptoPriceSpec

DEFAULT_BASE_URLS: Mapping[str, str] = {
    "coinbase": "https://api.coinbase.com",
    "binance": "https://api.binance.com",
    "kraken": "https://api.kraken.com",
    "coingecko": "https://api.coingecko.com",
}
# CoinGecko names coins by id, not symbol.
COINGECKO_IDS: Mapping[str, str] = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "SOL": "solana",
    "XRP": "ripple",
    "ADA": "cardano",
    "DOGE": "dogecoin",
    "DOT": "polkadot",
    "LTC": "litecoin",
    "BNB": "binancecoin",
    "USDT": "tether",
    "USDC": "usd-coin",
    "AVAX": "avalanche-2",
    "LINK": "chainlink",
    "TRX": "tron",
}
# Kraken's historical asset codes.
KRAKEN_ASSETS: Mapping[str, str] = {"BTC": "XBT", "DOGE": "XDG"}


@dataclass(frozen=True)
class ProviderConfig:
    base_urls: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_URLS))


class ProviderError(Exception):
    pass


async def _coinbase(client: httpx.AsyncClient, base: str, base_asset: str, quote: str, timeout_s: float) -> float:
    # GET /v2/prices/BTC-USD/spot -> {"data": {"amount": "70123.45", "base": "BTC", "currency": "USD"}}
    data = await _get(client, f"{base}/v2/prices/{base_asset}-{quote}/spot", {}, timeout_s)
    return float(data["data"]["amount"])


async def _binance(client: httpx.AsyncClient, base: str, base_asset: str, quote: str, timeout_s: float) -> float:
    # GET /api/v3/ticker/price?symbol=BTCUSDT -> {"symbol": "BTCUSDT", "price": "70123.45000000"}
    quote = "USDT" if quote == "USD" else quote
    data = await _get(client, f"{base}/api/v3/ticker/price", {"symbol": f"{base_asset}{quote}"}, timeout_s)
    return float(data["price"])


async def _kraken(client: httpx.AsyncClient, base: str, base_asset: str, quote: str, timeout_s: float) -> float:
    # GET /0/public/Ticker?pair=XBTUSD -> {"error": [], "result": {"XXBTZUSD": {"c": ["70123.4", "0.01"], ...}}}
    pair = f"{KRAKEN_ASSETS.get(base_asset, base_asset)}{quote}"
    data = await _get(client, f"{base}/0/public/Ticker", {"pair": pair}, timeout_s)
    if data.get("error"):
        raise ProviderError(f"kraken: {'; '.join(map(str, data['error']))[:100]}")
    (ticker,) = data["result"].values()
    return float(ticker["c"][0])


async def _coingecko(client: httpx.AsyncClient, base: str, base_asset: str, quote: str, timeout_s: float) -> float:
    # GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd -> {"bitcoin": {"usd": 70123.45}}
    coin = COINGECKO_IDS.get(base_asset)
    if coin is None:
        raise ProviderError(f"coingecko: no id known for {base_asset}")
    params = {"ids": coin, "vs_currencies": quote.lower()}
    data = await _get(client, f"{base}/api/v3/simple/price", params, timeout_s)
    return float(data[coin][quote.lower()])


PROVIDERS = {"coinbase": _coinbase, "binance": _binance, "kraken": _kraken, "coingecko": _coingecko}


async def _get(client: httpx.AsyncClient, url: str, params: Mapping[str, str], timeout_s: float) -> Any:
    response = await client.get(url, params=params, timeout=timeout_s)
    if response.status_code != 200:
        raise ProviderError(f"HTTP {response.status_code}")
    return response.json()


async def check_crypto_price(
    client: httpx.AsyncClient, providers: ProviderConfig, spec: CryptoPriceSpec, timeout_s: float
) -> Outcome:
    """The price from the first provider in ``spec.providers`` that answers sensibly."""
    started = time.perf_counter()
    base_asset, quote = spec.pair.split("-")
    problems = []
    for index, name in enumerate(spec.providers):
        remaining = timeout_s - (time.perf_counter() - started)
        if remaining <= 0:
            problems.append(f"{name}: out of time")
            break
        try:
            price = await PROVIDERS[name](client, providers.base_urls[name].rstrip("/"), base_asset, quote, remaining)
        except (httpx.HTTPError, ProviderError, KeyError, ValueError, TypeError) as error:
            problems.append(f"{name}: {type(error).__name__} {str(error)[:80]}".strip())
            continue
        if not (math.isfinite(price) and price > 0):  # float() takes "NaN" and "Infinity" too
            problems.append(f"{name}: price {price} is not a positive number")
            continue
        return Outcome(
            True,
            time.perf_counter() - started,
            fields={"price": price, "provider_index": float(index)},
            tags={"provider": name},
        )
    return fail("provider", "no provider answered: " + "; ".join(problems), started)
