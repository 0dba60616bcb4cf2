"""The DNS check: one lookup with dnspython's async resolver, compared with the expected answers.

Matching rule (the contract's, DnsSpec.expected_answers): with no expected answers, any answer is up; with
some, the check is up when at least one answer equals at least one expected value. Values are compared in
a normal form, so spelling does not matter where DNS says it does not:

- A / AAAA: as IP addresses (``2001:db8::1`` equals ``2001:0db8:0:0:0:0:0:1``).
- CNAME / NS: as names, case-insensitive, with or without the final dot.
- MX: ``10 mail.example.com`` matches preference and exchange; a bare ``mail.example.com`` matches the
  exchange at any preference.
- TXT: the record's strings joined, case-sensitive; surrounding double quotes on the expected value are
  ignored.

A resolver the user names is a target like any other: its address must pass the egress policy, its name is
resolved once, and the queries go to the pinned addresses. The runner's own resolver (resolv.conf) is the
operator's choice and is not checked.

An A or AAAA answer the egress policy refuses is never shown nor matched: the check is down as ``blocked``,
as a website check of the same name is, so a DNS check cannot map names the runner resolves (a cluster's
internal services) to the private addresses behind them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.resolver

from service_runtime.egress import BlockedTarget, EgressPolicy, ResolutionFailed, is_allowed, resolve
from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.domain import DnsSpec

_SHOWN_VALUES = 5
_SHOWN_CHARS = 60


class DnsCheck:
    """Runs DNS checks; reads the system resolver configuration once, when first needed."""

    def __init__(self, policy: EgressPolicy, system_resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self._policy = policy
        self._system = system_resolver

    def _system_resolver(self) -> dns.asyncresolver.Resolver:
        if self._system is None:
            self._system = dns.asyncresolver.Resolver()
        return self._system

    async def run(self, spec: DnsSpec, timeout_s: float) -> Outcome:
        """Look up ``spec.name`` once, never longer than ``timeout_s``."""
        started = time.perf_counter()
        try:
            resolver = await self._resolver_for(spec.resolver, timeout_s)
        except BlockedTarget as error:
            return fail("blocked", f"resolver refused: {error}", started)
        except ResolutionFailed as error:
            return fail("dns", f"resolver {error}", started)
        except dns.resolver.NoResolverConfiguration:
            return fail("dns", "the runner has no resolver configured; name one in spec.resolver", started)
        except TimeoutError:
            return fail("timeout", f"resolver name not resolved within {timeout_s:g}s", started)
        try:
            answer = await resolver.resolve(
                dns.name.from_text(spec.name), spec.record_type, lifetime=timeout_s, search=False
            )
        except dns.resolver.NXDOMAIN:
            return fail("dns", f"{spec.name} does not exist (NXDOMAIN)", started, {"answer_count": 0})
        except dns.resolver.NoAnswer:
            return fail("dns", f"{spec.name} has no {spec.record_type} records", started, {"answer_count": 0})
        except dns.resolver.NoNameservers as error:
            return fail("dns", f"no resolver answered for {spec.name}: {_short(error)}", started)
        except dns.resolver.YXDOMAIN:
            return fail("dns", f"{spec.name} is too long after DNAME substitution", started)
        except dns.exception.Timeout:
            return fail("timeout", f"no DNS answer within {timeout_s:g}s", started)
        except dns.exception.DNSException as error:
            return fail("dns", f"{type(error).__name__}: {_short(error)}", started)
        elapsed = time.perf_counter() - started
        if spec.record_type in ("A", "AAAA") and not all(
            is_allowed(ipaddress.ip_address(rdata.address), self._policy) for rdata in answer
        ):
            message = f"{spec.name} resolves to an address MONITORS_EGRESS={self._policy.value} refuses (not shown)"
            return fail("blocked", message, started)
        got = [answer_forms(spec.record_type, rdata) for rdata in answer]
        fields = {"response_time_ms": round(elapsed * 1000, 3), "answer_count": float(len(got))}
        if spec.expected_answers:
            wanted = {expected_form(spec.record_type, value) for value in spec.expected_answers}
            if not any(form in wanted for forms in got for form in forms):
                shown = sorted(forms[0] for forms in got)  # a set in DNS; sorted, so messages do not flap
                message = f"expected one of {_listing(spec.expected_answers)}, got {_listing(shown)}"
                return fail("assertion", message, started, fields)
        return Outcome(True, elapsed, fields=fields)

    async def _resolver_for(self, address: str, timeout_s: float) -> dns.asyncresolver.Resolver:
        if not address:
            return self._system_resolver()
        host, port = _split_resolver(address)
        pinned = await _resolve_within(host, port, self._policy, timeout_s)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [str(a) for a in pinned]
        resolver.port = port
        return resolver


async def _resolve_within(host: str, port: int, policy: EgressPolicy, timeout_s: float) -> list[str]:
    async with asyncio.timeout(timeout_s):
        return [str(a) for a in await resolve(host, port, policy)]


def _split_resolver(address: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (validation allows a port only when there is exactly one colon, so a bare
    IPv6 address is a host)."""
    if address.count(":") == 1:
        host, _, port = address.rpartition(":")
        return host, int(port)
    return address, 53


def answer_forms(record_type: str, rdata: dns.rdata.Rdata) -> tuple[str, ...]:
    """The normal forms an answer can be matched by (see the module docstring), the fullest first."""
    match record_type:
        case "A" | "AAAA":
            return (str(ipaddress.ip_address(rdata.address)),)  # type: ignore[attr-defined]
        case "CNAME" | "NS":
            return (_name(rdata.target),)  # type: ignore[attr-defined]
        case "MX":
            exchange = _name(rdata.exchange)  # type: ignore[attr-defined]
            return (f"{rdata.preference} {exchange}", exchange)  # type: ignore[attr-defined]
        case "TXT":
            return (b"".join(rdata.strings).decode("utf-8", "replace"),)  # type: ignore[attr-defined]
    return (rdata.to_text(),)


def expected_form(record_type: str, value: str) -> str:
    """An expected answer in the normal form of :func:`answer_forms`."""
    text = value.strip()
    match record_type:
        case "A" | "AAAA":
            try:
                return str(ipaddress.ip_address(text))
            except ValueError:
                return text
        case "CNAME" | "NS":
            return text.rstrip(".").lower()
        case "MX":
            parts = text.split()
            if len(parts) == 2 and parts[0].isdigit():
                return f"{int(parts[0])} {parts[1].rstrip('.').lower()}"
            return text.rstrip(".").lower()
        case "TXT":
            return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    return text


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _listing(values: list[str] | tuple[str, ...]) -> str:
    shown = [v if len(v) <= _SHOWN_CHARS else v[: _SHOWN_CHARS - 1] + "…" for v in values[:_SHOWN_VALUES]]
    more = f" and {len(values) - _SHOWN_VALUES} more" if len(values) > _SHOWN_VALUES else ""
    return f"[{', '.join(shown)}]{more}"


def _short(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:200]
