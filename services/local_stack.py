"""``make run``: the whole system on one machine, embedded (SQLite files under MONITORS_DATA_DIR).

Starts the three service processes and one runner, waits until each answers its health check, prints where they are and
what to try next, and on Ctrl-C (or SIGTERM) stops them all gracefully.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime.settings import DEFAULT_LISTEN, ServiceName, Settings, target_of

SERVICES: tuple[tuple[ServiceName, str, str], ...] = (
    ("monitor", "services.monitor_svc", "monitors.v1.MonitorService, monitors.v1.AccountService"),
    ("alert", "services.alert_svc", "monitors.v1.AlertService"),
    ("notify", "services.notify_svc", "monitors.v1.NotificationService"),
    ("runner", "services.monitor_svc.runner", "runs the checks (health only)"),
)
# One machine, one user: checks and notifications may reach the LAN and this machine
# (MONITORS_EGRESS=private-allowed), which a multi-user deployment must not allow. Every process gets the same
# policy, so RunCheck, the runner and a webhook to a LAN receiver agree. MONITORS_EGRESS=public refuses them.
EGRESS_DEFAULT = "private-allowed"
STARTUP_DEADLINE_S = 60.0
# Where the processes reach one another, by variable: the service that must answer there (its health name). In make
# run each follows its service's *_LISTEN unless set, so moving a listener takes one variable.
TARGETS: dict[str, tuple[ServiceName, str]] = {
    "MONITORS_MONITOR_TARGET": ("monitor", "monitors.v1.MonitorService"),
    "MONITORS_ALERT_TARGET": ("alert", "monitors.v1.AlertService"),
    "MONITORS_NOTIFY_TARGET": ("notify", "monitors.v1.NotificationService"),
}
# The MCP adapter for Claude, over streamable HTTP (each Claude client presents its own API key).
MCP_LISTEN_DEFAULT = "127.0.0.1:8765"


@dataclass
class Child:
    name: ServiceName | Literal["mcp"]
    address: str
    services: str
    process: subprocess.Popen[bytes]


def health_status(address: str, timeout_s: float = 1.0) -> str:
    """The overall health of the server at ``address``: SERVING, NOT_SERVING, ... or UNREACHABLE."""
    return health_check(address, "", timeout_s)[0]


def health_check(address: str, service: str = "", timeout_s: float = 1.0) -> tuple[str, str]:
    """The health of ``service`` (overall when empty) at ``address``, and why when it is not SERVING:
    ("SERVING", ""), ("NOT_SERVING", ...), ("UNREACHABLE", "connection refused"), ("NOT_FOUND", ...)."""
    try:
        with grpc.insecure_channel(address) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout_s)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)), ""
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        details = error.details() if isinstance(error, grpc.Call) else ""
        if code is grpc.StatusCode.NOT_FOUND:
            return "NOT_FOUND", f"a server answers there, but it serves no {service}"
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return "UNREACHABLE", f"no answer within {timeout_s:g} s"
        # grpc's "failed to connect to all addresses; last error: UNKNOWN: ipv4:...: Connection refused"
        return "UNREACHABLE", (details or str(code)).rpartition(": ")[2].strip("] ") or "unreachable"


def targets_following_listeners(env: dict[str, str]) -> dict[str, str]:
    """Each *_TARGET not set in ``env``: the address its service listens on."""
    return {variable: target_of(env, name) for variable, (name, _) in TARGETS.items() if not env.get(variable)}


def wrong_target(env: dict[str, str]) -> str | None:
    """The first *_TARGET whose address does not answer as its service, said with the address and why."""
    for variable, (name, service) in TARGETS.items():
        address = env[variable]
        status, why = health_check(address, service, timeout_s=3.0)
        if status != "SERVING":
            listen = env.get(f"MONITORS_{name.upper()}_LISTEN") or DEFAULT_LISTEN[name]
            return (
                f"{variable}={address} does not reach the {name} service ({status}: {why or status}); it listens on"
                f" {listen}. Unset {variable} and it follows MONITORS_{name.upper()}_LISTEN"
            )
    return None


def stop_all(children: list[Child], grace_s: float) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


class StopFlag:
    """Set by a signal handler, read by the main loop (not threading.Event: its lock could be held by the very
    code the handler interrupts)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def wait_until_serving(children: list[Child], deadline: float, stopping: Callable[[], bool]) -> str | None:
    """Wait until every child answers SERVING; what went wrong if one exits or the deadline passes first."""
    pending = list(children)
    while pending and not stopping():
        for child in list(pending):
            if child.process.poll() is not None:
                return f"{child.name} service exited with code {child.process.returncode}"
            if health_status(child.address) == "SERVING":
                pending.remove(child)
        if pending and time.monotonic() > deadline:
            waiting = ", ".join(f"{c.name} at {c.address} ({' '.join(health_check(c.address))})" for c in pending)
            return f"not serving after {STARTUP_DEADLINE_S:g} s: {waiting}"
        time.sleep(0.2)
    return None


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def start_mcp_adapter(env: dict[str, str], deadline: float) -> Child | None:
    """The MCP adapter over HTTP on MONITORS_MCP_LISTEN, pointed at the services' *_TARGET, once it answers;
    None (the services keep running) if it cannot start, such as when its port is taken."""
    address = env.get("MONITORS_MCP_LISTEN") or MCP_LISTEN_DEFAULT
    host, _, port = address.rpartition(":")
    if not port_is_free(host, int(port)):
        # Another program (another make run, say) answers there: its health would pass for ours.
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_adapter", "--transport", "http", "--host", host, "--port", port],
        env=env,  # its *_TARGET variables are the services' (run() checked them)
        start_new_session=True,
    )
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=1):
                if process.poll() is None:
                    return Child("mcp", address, "MCP adapter (streamable HTTP) for Claude", process)
        except OSError:
            time.sleep(0.2)
    if process.poll() is None:
        process.terminate()
        process.wait()
    return None


def main() -> int:
    env = dict(os.environ)
    settings = Settings.from_env("monitor", env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        return run(env, settings, children, stop)
    finally:
        # Whatever ended the run, even an error printing to a closed terminal, the services do not outlive it.
        stop_all(children, settings.shutdown_grace_s + 5)


def run(env: dict[str, str], settings: Settings, children: list[Child], stop: StopFlag) -> int:
    """Start the services into ``children``, report them, and serve until ``stop`` is set or one exits."""
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    # The runner starts once the services serve: started with them, it would begin with a refused connection and
    # a warning in the output.
    env = {
        **env,
        "MONITORS_EGRESS": env.get("MONITORS_EGRESS") or EGRESS_DEFAULT,
        # A terminal to read: one line per monitor DOWN or UP, alert firing or resolved, notification sent, and
        # each warning or error; not a JSON line per call. MONITORS_LOG_LEVEL=INFO shows more, and
        # MONITORS_LOG_FORMAT=json gives the production lines.
        "MONITORS_LOG_LEVEL": env.get("MONITORS_LOG_LEVEL") or "WARNING",
        "MONITORS_LOG_FORMAT": env.get("MONITORS_LOG_FORMAT") or "console",
        # gRPC's own C-core notes (a fork while its threads run, say) are not for this terminal; errors still are.
        "GRPC_VERBOSITY": env.get("GRPC_VERBOSITY") or "ERROR",
        # One machine, no balancer: Ctrl-C stops at once unless asked otherwise.
        "MONITORS_DRAIN_DELAY_S": env.get("MONITORS_DRAIN_DELAY_S") or "0",
        **targets_following_listeners(env),
    }
    for first, group in ((True, SERVICES[:-1]), (False, SERVICES[-1:])):
        if stop.is_set():
            break
        for name, module, services in group:
            address = env.get(f"MONITORS_{name.upper()}_LISTEN") or DEFAULT_LISTEN[name]
            # Children ignore the terminal's Ctrl-C: this process stops them in order, with SIGTERM.
            process = subprocess.Popen([sys.executable, "-m", module], env=env, start_new_session=True)
            children.append(Child(name, address, services, process))
        error = wait_until_serving(children[-len(group) :], deadline, stop.is_set)
        if error is None and first and not stop.is_set():
            # A target that misses its service fails later and quietly (the runner waits, login emails fail): say
            # so now, before the runner starts.
            error = wrong_target(env)
        if error is not None:
            print(f"{error}; stopping.", file=sys.stderr)
            return 1

    adapter = start_mcp_adapter(env, time.monotonic() + 30) if not stop.is_set() else None
    if adapter is not None:
        children.append(adapter)
    if not stop.is_set():
        monitor = children[0].address
        print("\nmonitors is running (embedded mode, data in " + str(settings.data_dir) + ")\n")
        egress = env["MONITORS_EGRESS"]
        reach = "may" if egress == EGRESS_DEFAULT else "may not"
        print(f"  (egress policy is {egress}: checks and notifications {reach} reach private and local addresses)\n")
        for child in children:
            if child is not adapter:
                print(f"  {child.name:<8} {child.address:<18} {health_status(child.address):<12} {child.services}")
        ping_base = settings.ping_base_url
        print(f"  {'pings':<8} {ping_base.removeprefix('http://'):<18} {'':<12} heartbeat monitors' ping URLs")
        if adapter is not None:
            url = f"http://{adapter.address}/mcp"
            print(
                f"  {'mcp':<8} {adapter.address:<18} {'SERVING':<12} {adapter.services}\n"
                "\nConnect Claude (each person with their own API key, from step 1 below):\n"
                f"  Claude Code:    claude mcp add --transport http monitors {url} \\\n"
                '                      --header "Authorization: Bearer $KEY"\n'
                f"  Claude Desktop: npx mcp-remote {url} --header 'Authorization: Bearer ...' in its\n"
                "                  config, or the adapter over stdio (README, section MCP adapter)"
            )
        else:
            taken = env.get("MONITORS_MCP_LISTEN") or MCP_LISTEN_DEFAULT
            print(
                f"  (the MCP adapter did not start: {taken} is taken or it failed; the services run without it."
                " Set MONITORS_MCP_LISTEN=127.0.0.1:<free port> to choose another)"
            )
        print(
            "\nNext steps:\n"
            "  1. Get an API key:\n"
            "       .venv/bin/python -m services.admin create-api-key --email you@example.com\n"
            "  2. Call the API with it (grpcurl comes with make run; any gRPC client works):\n"
            f"       .venv/bin/grpcurl -plaintext {monitor} list\n"
            '       .venv/bin/grpcurl -plaintext -H "authorization: Bearer $KEY" '
            f"{monitor} monitors.v1.AccountService/GetCurrentUser\n"
            "  3. Watch a website:\n"
            '       .venv/bin/grpcurl -plaintext -H "authorization: Bearer $KEY" '
            """-d '{"monitor": {"spec": {"website": {"url": "https://example.com"}}}}' """
            f"{monitor} monitors.v1.MonitorService/CreateMonitor\n"
            "\nThis terminal shows each monitor going DOWN or coming back UP, each alert firing or resolved, each\n"
            "notification sent, and warnings and errors, one line each (MONITORS_LOG_FORMAT=json for JSON lines).\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
    while not stop.is_set():
        for child in list(children):
            if child.process.poll() is None:
                continue
            if child is adapter:
                # Claude's way in is gone, but the services are fine: say so and keep them.
                print(
                    f"the MCP adapter exited with code {child.process.returncode}; the services go on.", file=sys.stderr
                )
                children.remove(child)
                continue
            print(f"{child.name} service exited with code {child.process.returncode}; stopping.", file=sys.stderr)
            stop.set()
        time.sleep(0.5)
    print("stopping...", file=sys.stderr, flush=True)
    stop_all(children, settings.shutdown_grace_s + 5)
    failed = [c for c in children if c.process.returncode not in (0, -signal.SIGTERM)]
    print("stopped." if not failed else f"stopped; {', '.join(c.name for c in failed)} exited with an error.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
