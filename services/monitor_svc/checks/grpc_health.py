"""The gRPC health check: grpc.health.v1.Health/Check of a remote service, through the egress policy.

The target's host is resolved once and checked like any other target; the channel then dials the pinned
address itself (``ipv4:1.2.3.4:443`` / ``ipv6:[::1]:443``), so gRPC never resolves the name again. The original
host name stays the authority and, with TLS, the name the certificate must carry.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime.egress import BlockedTarget, EgressConfig, ResolutionFailed, resolve
from services.monitor_svc.checks.outcome import Outcome, fail
from services.monitor_svc.domain import GrpcHealthSpec

_SERVING_NAMES = {
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
    health_pb2.HealthCheckResponse.SERVING: "SERVING",
    health_pb2.HealthCheckResponse.NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
}
_TLS_HINTS = ("ssl", "handshake", "certificate", "tls")


class GrpcHealthCheck:
    """Runs gRPC health checks; reads the configured CA file once, when first needed."""

    def __init__(self, config: EgressConfig) -> None:
        self._config = config
        self._credentials: grpc.ChannelCredentials | None = None

    def _tls(self) -> grpc.ChannelCredentials:
        if self._credentials is None:
            roots = Path(self._config.ca_file).read_bytes() if self._config.ca_file else None
            self._credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return self._credentials

    async def run(self, spec: GrpcHealthSpec, timeout_s: float) -> Outcome:
        """One Health/Check call, trying each pinned address in turn, never longer than ``timeout_s``."""
        started = time.perf_counter()
        deadline = started + timeout_s
        raw_host, _, port_text = spec.target.rpartition(":")
        host, port = raw_host.strip("[]"), int(port_text)
        try:
            addresses = await resolve(host, port, self._config.policy)
        except BlockedTarget as error:
            return fail("blocked", str(error), started)
        except ResolutionFailed as error:
            return fail("dns", str(error), started)
        last: Outcome | None = None
        for address in addresses:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            last = await self._check_one(spec, host, port, address, remaining, started)
            if last.error_class != "connect":
                return last
        return last or fail("timeout", f"no answer within {timeout_s:g}s", started)

    async def _check_one(
        self,
        spec: GrpcHealthSpec,
        host: str,
        port: int,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        timeout_s: float,
        started: float,
    ) -> Outcome:
        dial = f"ipv4:{address}:{port}" if address.version == 4 else f"ipv6:[{address}]:{port}"
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        options: list[tuple[str, str | int]] = [
            ("grpc.default_authority", authority),
            ("grpc.enable_http_proxy", 0),  # a proxy from the environment would bypass the pinned address
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 64 * 1024),
        ]
        if spec.use_tls:
            options.append(("grpc.ssl_target_name_override", host))
            channel = grpc.aio.secure_channel(dial, self._tls(), options=options)
        else:
            channel = grpc.aio.insecure_channel(dial, options=options)
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=spec.service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            return _failure(spec, error, timeout_s, started)
        finally:
            await channel.close()
        elapsed = time.perf_counter() - started
        fields = {"response_time_ms": round(elapsed * 1000, 3)}
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return Outcome(True, elapsed, fields=fields)
        status = _SERVING_NAMES.get(reply.status, str(reply.status))
        return fail("status", f"{_subject(spec)} is {status}", started, fields)


def _failure(spec: GrpcHealthSpec, error: grpc.aio.AioRpcError, timeout_s: float, started: float) -> Outcome:
    code, details = error.code(), (error.details() or "")[:200]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return fail("timeout", f"no answer within {timeout_s:g}s", started)
    if code == grpc.StatusCode.NOT_FOUND:
        return fail("status", f"{_subject(spec)} is SERVICE_UNKNOWN (NOT_FOUND)", started)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return fail("status", f"{spec.target} does not serve grpc.health.v1.Health", started)
    if code == grpc.StatusCode.UNAVAILABLE:
        if spec.use_tls and any(hint in details.lower() for hint in _TLS_HINTS):
            return fail("tls", f"TLS handshake failed: {details}", started)
        return fail("connect", f"connection failed: {details}", started)
    return fail("status", f"health check failed: {code.name} {details}".rstrip(), started)


def _subject(spec: GrpcHealthSpec) -> str:
    return f"service {spec.service!r}" if spec.service else "the server"
