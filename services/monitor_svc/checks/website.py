"""The website check: one HTTP(S) request through the egress policy, with assertions."""

from __future__ import annotations

import json
import re
import ssl
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from service_runtime.egress import BlockedTarget, EgressConfig, ResolutionFailed
from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.domain import JsonPathAssertion, WebsiteSpec

REDIRECTS = (301, 302, 303, 307, 308)
# Ask for the body as it is: assertions read text, and decompressing untrusted bodies is a memory risk.
# A user's own headers win; a server that compresses anyway is decoded below, bounded.
DEFAULT_HEADERS = {"accept-encoding": "identity", "user-agent": "monitors-uptime-check/0.1"}
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


async def check_website(
    client: httpx.AsyncClient, config: EgressConfig, spec: WebsiteSpec, timeout_s: float
) -> Outcome:
    """Fetch ``spec.url`` (secrets already substituted), following redirects hop by hop when asked."""
    started = time.perf_counter()
    url, method, body = spec.url, spec.method, spec.body.encode() or None
    try:
        for _ in range(config.max_redirects + 1):
            if urlsplit(url).scheme not in ("http", "https"):
                return fail("blocked", f"redirect to a {urlsplit(url).scheme or 'relative'} URL refused", started)
            headers = httpx.Headers(DEFAULT_HEADERS)
            headers.update(spec.headers)
            request = client.build_request(method, url, headers=headers, content=body, timeout=timeout_s)
            response = await client.send(request, stream=True)
            try:
                if response.status_code in REDIRECTS and spec.follow_redirects and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    continue
                cert_days = _cert_days_left(response)
                content, truncated = await _read_capped(response, config.max_body_bytes)
            finally:
                await response.aclose()
            return _judge(spec, response.status_code, content, truncated, cert_days, started)
        return fail("status", f"more than {config.max_redirects} redirects", started)
    except BlockedTarget as error:
        return fail("blocked", str(error), started)
    except (httpx.InvalidURL, ValueError) as error:  # httpx refuses some address spellings outright
        return fail("blocked", f"URL refused: {_short(error)}", started)
    except ResolutionFailed as error:
        return fail("dns", str(error), started)
    except httpx.TimeoutException:
        return fail("timeout", f"no answer within {timeout_s:g}s", started)
    except httpx.ConnectError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ssl.SSLError) or "SSL" in str(error) or "certificate" in str(error).lower():
            return fail("tls", f"TLS handshake failed: {_short(error)}", started)
        return fail("connect", f"connection failed: {_short(error)}", started)
    except httpx.HTTPError as error:
        return fail("connect", f"{type(error).__name__}: {_short(error)}", started)


def _short(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:200]


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body, decoded from gzip or deflate when the server sent it so, at most ``limit`` bytes of it (the
    decoder never produces more than that either, so a compression bomb costs nothing)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, limit - size + 1)
            except zlib.error:
                return b"".join(chunks), False  # judged on what decoded cleanly
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _cert_days_left(response: httpx.Response) -> float | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert or "notAfter" not in cert:
        return None
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    return round((expires - datetime.now(UTC)) / timedelta(days=1), 2)


def _judge(
    spec: WebsiteSpec, status: int, content: bytes, truncated: bool, cert_days: float | None, started: float
) -> Outcome:
    elapsed_ms = (time.perf_counter() - started) * 1000
    fields: dict[str, float] = {"status_code": float(status), "response_time_ms": round(elapsed_ms, 3)}
    if cert_days is not None:
        fields["cert_days_left"] = cert_days
    if not any(low <= status <= high for low, high in spec.accepted_status_codes):
        return fail("status", f"HTTP {status}", started, fields)
    if spec.keyword is not None:
        text = content.decode("utf-8", "replace")
        keyword = spec.keyword.keyword
        present = keyword in text if spec.keyword.case_sensitive else keyword.lower() in text.lower()
        if present == spec.keyword.absent:
            where = " in the first 1 MiB" if truncated else ""
            verb = "present" if present else "missing"
            return fail("assertion", f"keyword {keyword[:50]!r} {verb}{where}", started, fields)
    if spec.json_path is not None:
        problem = _json_assertion(spec.json_path, content)
        if problem:
            return fail("assertion", problem, started, fields)
    if cert_days is not None and spec.cert_expiry_days and cert_days < spec.cert_expiry_days:
        return fail("tls", f"certificate expires in {cert_days:.1f} days", started, fields)
    return Outcome(True, elapsed_ms / 1000, fields=fields)


def json_path_value(document: Any, path: str) -> Any:
    """The value at a simple JSONPath (``$.a.b[0]['c']``); KeyError when absent."""
    if not path.startswith("$"):
        raise KeyError(path)
    position, value = 1, document
    while position < len(path):
        match = _PATH_PART.match(path, position)
        if match is None:
            raise KeyError(path)
        name, index, quoted, double_quoted = match.groups()
        if index is not None:
            if not isinstance(value, list) or int(index) >= len(value):
                raise KeyError(path)
            value = value[int(index)]
        else:
            key = name if name is not None else quoted if quoted is not None else double_quoted
            if not isinstance(value, dict) or key not in value:
                raise KeyError(path)
            value = value[key]
        position = match.end()
    return value


def compare(actual: Any, operator: str, expected: str) -> bool:
    left: Any
    right: Any
    try:
        left, right = float(actual), float(expected)
    except (TypeError, ValueError):
        left = json.dumps(actual) if not isinstance(actual, str) else actual
        right = expected
    match operator:
        case "==":
            return bool(left == right)
        case "!=":
            return bool(left != right)
        case ">":
            return bool(left > right)
        case ">=":
            return bool(left >= right)
        case "<":
            return bool(left < right)
        case "<=":
            return bool(left <= right)
    raise ValueError(operator)


def _json_assertion(assertion: JsonPathAssertion, content: bytes) -> str:
    try:
        document = json.loads(content)
    except ValueError:
        return "body is not JSON"
    try:
        actual = json_path_value(document, assertion.path)
    except KeyError:
        return f"{assertion.path} not found"
    if not compare(actual, assertion.operator, assertion.expected):
        return f"{assertion.path} is {json.dumps(actual)[:60]}, expected {assertion.operator} {assertion.expected[:60]}"
    return ""
