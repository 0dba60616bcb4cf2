"""Checks: run one monitor spec once and say what happened. Used by runners and by RunCheck."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import httpx

from service_runtime.egress import EgressConfig, EgressPolicy, tls_context
from service_runtime.errors import FailedPrecondition
from service_runtime.http_client import HttpClient
from service_runtime.secret_masking import mask_secrets
from service_runtime.settings import Settings
from services.monitor_svc.checks.crypto import DEFAULT_BASE_URLS, ProviderConfig, check_crypto_price
from services.monitor_svc.checks.dns import DnsCheck
from services.monitor_svc.checks.grpc_health import GrpcHealthCheck
from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.checks.tcp import check_tcp
from services.monitor_svc.checks.website import check_website
from services.monitor_svc.domain import (
    SECRET_REFERENCE,
    CryptoPriceSpec,
    DnsSpec,
    GrpcHealthSpec,
    HeartbeatSpec,
    Spec,
    TcpSpec,
    WebsiteSpec,
)

__all__ = ["CheckConfig", "Checker", "Outcome", "check_config"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckConfig:
    egress: EgressConfig = field(default_factory=EgressConfig)
    providers: ProviderConfig = field(default_factory=ProviderConfig)


def check_config(settings: Settings) -> CheckConfig:
    """The check configuration a monitor service or runner takes from its settings."""
    return CheckConfig(
        egress=EgressConfig(policy=EgressPolicy(settings.egress), ca_file=settings.ca_file),
        providers=ProviderConfig({**DEFAULT_BASE_URLS, **settings.provider_urls}),
    )


class MissingSecret(Exception):
    pass


def _substitute(text: str, secrets: Mapping[str, str]) -> str:
    def value(match: object) -> str:
        name = match.group(1)  # type: ignore[attr-defined]
        if name not in secrets:
            raise MissingSecret(name)
        return secrets[name]

    return SECRET_REFERENCE.sub(value, text)


def mask(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value, in any spelling (case, percent-encoding, JSON escapes, base64, ...),
    replaced by ****."""
    return mask_secrets(text, secrets.values())


class Checker:
    """Runs checks with shared HTTP connection pools; one per process."""

    def __init__(self, config: CheckConfig | None = None) -> None:
        self.config = config or CheckConfig()
        context = tls_context(self.config.egress)
        self._http = HttpClient(self.config.egress.policy, context, self.config.egress.max_body_bytes)
        self._providers = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self._dns = DnsCheck(self.config.egress.policy)
        self._grpc_health = GrpcHealthCheck(self.config.egress)

    async def run(self, spec: Spec, timeout_s: float, secrets: Mapping[str, str] | None = None) -> Outcome:
        """One check of ``spec``, never longer than ``timeout_s`` (plus a little to clean up). Always an
        outcome: an unexpected error inside the check is a down outcome of class ``internal``, so that a
        monitor whose check breaks goes down instead of silent (runners and RunCheck both come here)."""
        if isinstance(spec, HeartbeatSpec):
            raise FailedPrecondition("heartbeat monitors are checked by their pings, not run")
        secrets = secrets or {}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s + 0.5):
                outcome = await self._dispatch(spec, timeout_s, secrets)
        except MissingSecret as missing:
            return fail("assertion", f"secret {missing.args[0]} is not set; PutSecret it first", started)
        except TimeoutError:
            return fail("timeout", f"no answer within {timeout_s:g}s", started)
        except Exception as error:  # a check's error is its result, whatever it is
            log.exception("check failed unexpectedly", extra={"kind": type(spec).__name__})
            # The type alone: the error's text may carry what the target sent or a secret in another form.
            return fail("internal", f"the check stopped on an unexpected error ({type(error).__name__})", started)
        return replace(outcome, message=mask(outcome.message, secrets)) if outcome.message else outcome

    async def _dispatch(self, spec: Spec, timeout_s: float, secrets: Mapping[str, str]) -> Outcome:
        match spec:
            case WebsiteSpec():
                concrete = replace(
                    spec,
                    url=_substitute(spec.url, secrets),
                    headers={k: _substitute(v, secrets) for k, v in spec.headers.items()},
                    body=_substitute(spec.body, secrets),
                )
                return await check_website(self._http, self.config.egress, concrete, timeout_s)
            case CryptoPriceSpec():
                return await check_crypto_price(self._providers, self.config.providers, spec, timeout_s)
            case TcpSpec():
                return await check_tcp(self.config.egress.policy, spec, timeout_s)
            case DnsSpec():
                return await self._dns.run(spec, timeout_s)
            case GrpcHealthSpec():
                return await self._grpc_health.run(spec, timeout_s)
        raise AssertionError(spec)

    async def close(self) -> None:
        await self._http.aclose()
        await self._providers.aclose()
