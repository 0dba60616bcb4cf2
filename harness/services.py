"""Our three gRPC services as real processes on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import dying_with_parent
from service_runtime.settings import ROLE_TOKENS, Role

REPO = Path(__file__).resolve().parents[1]
MODULES = {
    "monitor": "services.monitor_svc",
    "alert": "services.alert_svc",
    "notify": "services.notify_svc",
    "runner": "services.monitor_svc.runner",
}
SERVICES = ("monitor", "alert", "notify")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process: ours, with the repo and gen/ importable and ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITORS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "gen")])
    env.update(extra)
    return env


def role_tokens_env(name: str) -> dict[str, str]:
    """Each role's token variable with a value of its own (``name`` tells one test's tokens from another's)."""
    return {variable: f"{name}-{role}-token-0123456789" for role, (variable, _) in ROLE_TOKENS.items()}


def channel_for(address: str, env: Mapping[str, str] | None = None) -> grpc.Channel:
    """A client channel to one of our services, speaking TLS (with our client certificate) when ``env`` turns
    it on, as the services' own clients do."""
    env = env or {}
    if not env.get("MONITORS_TLS_CA_FILE"):
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(env["MONITORS_TLS_CA_FILE"]).read_bytes(),
        private_key=Path(env["MONITORS_TLS_KEY_FILE"]).read_bytes() if env.get("MONITORS_TLS_KEY_FILE") else None,
        certificate_chain=Path(env["MONITORS_TLS_CERT_FILE"]).read_bytes()
        if env.get("MONITORS_TLS_CERT_FILE")
        else None,
    )
    return grpc.secure_channel(address, credentials)


def health(address: str, service: str = "", timeout_s: float = 1.0, env: Mapping[str, str] | None = None) -> int:
    """The health status of ``service`` at ``address`` (a HealthCheckResponse.ServingStatus value)."""
    with channel_for(address, env) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
        return int(reply.status)


@dataclass
class ServiceProcess:
    """One service process (``python -m services.<name>_svc``) with its own log file."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                dying_with_parent([sys.executable, "-m", MODULES[self.name], "--listen", self.address]),
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # A runner serves only health, in plaintext, whatever the TLS settings.
                tls_env = None if self.name == "runner" else self.env
                if health(self.address, env=tls_env) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not healthy after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL if it will not go; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def create_api_key(env: Mapping[str, str], email: str) -> str:
    """A new API key for ``email`` through the real admin command (``python -m services.admin create-api-key``),
    with the environment (data directory or database) of the services it is for."""
    result = subprocess.run(
        [sys.executable, "-m", "services.admin", "create-api-key", "--email", email],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@dataclass
class Stack:
    """The three services sharing one configuration (embedded or production)."""

    data_dir: Path
    settings_env: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = {name: free_port() for name in SERVICES}
        env = python_env(
            {
                "MONITORS_DATA_DIR": str(self.data_dir),
                "MONITORS_MONITOR_TARGET": f"127.0.0.1:{ports['monitor']}",
                "MONITORS_NOTIFY_TARGET": f"127.0.0.1:{ports['notify']}",
                "MONITORS_LOG_FORMAT": "json",
                "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
                "MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}",
                # Nothing balances these processes: stopping one need not wait for NOT_SERVING to be noticed.
                "MONITORS_DRAIN_DELAY_S": "0",
                **self.settings_env,
            }
        )
        for name, port in ports.items():
            self.services[name] = ServiceProcess(name, env, self.data_dir / f"{name}.log", port)

    @property
    def env(self) -> dict[str, str]:
        return self.services["monitor"].env

    def address(self, name: str) -> str:
        return self.services[name].address

    def role_token(self, role: Role) -> str:
        """The token ``role`` presents (a runner, the alert or monitor service, the operator): its variable
        (required in production), or the one the embedded services keep in the data directory."""
        variable, file = ROLE_TOKENS[role]
        return self.env.get(variable) or (self.data_dir / file).read_text().strip()

    def start(self) -> Stack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for service in self.services.values():
                service.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    def runner(self, runner_id: str, location: str = "local", **env: str) -> ServiceProcess:
        """A runner process (not started) for this stack, with the stack's settings and ``env`` on top."""
        extra = {"MONITORS_RUNNER_ID": runner_id, "MONITORS_RUNNER_LOCATION": location, **env}
        return ServiceProcess("runner", {**self.env, **extra}, self.data_dir / f"runner-{runner_id}.log")

    def alert_replica(self, name: str, **env: str) -> ServiceProcess:
        """Another alert-service process (not started) for this stack, on its own port and ingest endpoint."""
        extra = {"MONITORS_ALERT_INGEST_LISTEN": f"127.0.0.1:{free_port()}", **env}
        return ServiceProcess("alert", {**self.env, **extra}, self.data_dir / f"alert-{name}.log")

    def create_api_key(self, email: str) -> str:
        """A new API key for ``email`` through the real admin command."""
        return create_api_key(self.env, email)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
