"""The website check: one HTTP(S) request through the egress policy, with assertions."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

from service_runtime.egress import BlockedTarget, EgressConfig, ResolutionFailed
from service_runtime.http_client import (
    ConnectFailed,
    HttpClient,
    InvalidUrl,
    ProtocolError,
    TlsFailed,
    parse_url,
)
from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.domain import JsonPathAssertion, WebsiteSpec

REDIRECTS = (301, 302, 303, 307, 308)
# Ask for the body as it is: assertions read text, and decompressing untrusted bodies is a memory risk.
# A user's own headers win; a server that compresses anyway is decoded below, bounded.
DEFAULT_HEADERS = {"accept-encoding": "identity", "user-agent": "monitors-uptime-check/0.1"}
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


async def check_website(client: HttpClient, config: EgressConfig, spec: WebsiteSpec, timeout_s: float) -> Outcome:
    """Fetch ``spec.url`` (secrets already substituted), following redirects hop by hop when asked; every hop
    connects through the egress policy again. ``timeout_s`` bounds the whole check, redirects included."""
    started = time.perf_counter()
    url, method, body = spec.url, spec.method, spec.body.encode() or None
    given = {name.lower() for name in spec.headers}
    headers = {name: value for name, value in DEFAULT_HEADERS.items() if name not in given} | dict(spec.headers)
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(config.max_redirects + 1):
                if urlsplit(url).scheme not in ("http", "https"):
                    return fail("blocked", f"redirect to a {urlsplit(url).scheme or 'relative'} URL refused", started)
                response = await client.request(method, url, headers, body)
                location = response.headers.get("location")
                if response.status in REDIRECTS and spec.follow_redirects and location is not None:
                    next_url = urljoin(url, location)
                    if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    # (A next hop that is not http(s) is refused at the top of the loop.)
                    if urlsplit(next_url).scheme in ("http", "https") and _origin(next_url) != _origin(url):
                        # The user's headers and body (credentials, secrets, Host) stay with the origin they were
                        # meant for; a redirect that must resend the body (307, 308) is not followed there.
                        if body is not None:
                            return fail(
                                "blocked",
                                f"{response.status} redirect to another origin refused: it would resend the body",
                                started,
                            )
                        headers = dict(DEFAULT_HEADERS)
                    url = next_url
                    continue
                cert_days = _cert_days_left(response.peer_cert)
                if response.decode_error and (spec.keyword is not None or spec.json_path is not None):
                    return fail("assertion", f"cannot read the body: {response.decode_error}", started)
                return _judge(spec, response.status, response.body, response.truncated, cert_days, started)
            return fail("status", f"more than {config.max_redirects} redirects", started)
    except TimeoutError:
        return fail("timeout", f"no answer within {timeout_s:g}s", started)
    except BlockedTarget as error:
        return fail("blocked", str(error), started)
    except InvalidUrl as error:
        return fail("blocked", f"URL refused: {_short(error)}", started)
    except ResolutionFailed as error:
        return fail("dns", str(error), started)
    except TlsFailed as error:
        return fail("tls", f"TLS handshake failed: {_short(error)}", started)
    except ConnectFailed as error:
        return fail("connect", f"connection failed: {_short(error)}", started)
    except ProtocolError as error:
        return fail("connect", f"bad response: {_short(error)}", started)


def _origin(url: str) -> tuple[str, str, int]:
    target = parse_url(url)
    return target.scheme, target.host, target.port


def _short(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:200]


def _cert_days_left(cert: Mapping[str, Any] | None) -> float | None:
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


def _json_text(value: Any) -> str:
    """``value`` as JSON text; a value nested too deeply to write (RecursionError) as a short note."""
    try:
        return json.dumps(value)
    except RecursionError:
        return "(a value nested too deeply to show)"


def compare(actual: Any, operator: str, expected: str) -> bool:
    left: Any
    right: Any
    try:
        left, right = float(actual), float(expected)
    except (TypeError, ValueError):
        left = _json_text(actual) if not isinstance(actual, str) else actual
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
    except RecursionError:  # the parser's depth is bounded by the recursion limit: a hostile body stops there
        return "body is JSON nested too deeply to read"
    try:
        actual = json_path_value(document, assertion.path)
    except KeyError:
        return f"{assertion.path} not found"
    if not compare(actual, assertion.operator, assertion.expected):
        return f"{assertion.path} is {_json_text(actual)[:60]}, expected {assertion.operator} {assertion.expected[:60]}"
    return ""
