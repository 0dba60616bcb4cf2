"""The container image's recipe (Dockerfile, .dockerignore, scripts/container-entrypoint.sh), checked without a
container engine (none runs here): the Dockerfile as BuildKit's own parser reads it (the `dockerfile`
package wraps it), the entrypoint run as the image runs it, and the processes the Kubernetes manifests start.
What only a build proves (base images pull, every wheel installs, the image starts) is not tested here."""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dockerfile
import grpc
from grpc_health.v1 import health_pb2

from harness.k8s import KUSTOMIZATIONS, containers, render
from harness.services import REPO, free_port, health, python_env

ENTRYPOINT = REPO / "scripts" / "container-entrypoint.sh"
PROCESSES = {
    "monitor": "python -m services.monitor_svc",
    "alert": "python -m services.alert_svc",
    "notify": "python -m services.notify_svc",
    "runner": "python -m services.monitor_svc.runner",
    "mcp": "monitors-mcp",
    "admin": "python -m services.admin",
}


def stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's instructions, one list per stage (each starts with its FROM)."""
    found: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(REPO / "Dockerfile")):
        if command.cmd == "FROM":
            found.append([])
        assert found, "the Dockerfile must start with FROM"
        found[-1].append(command)
    return found


def instructions(stage: list[dockerfile.Command], name: str) -> list[dockerfile.Command]:
    return [command for command in stage if command.cmd == name]


def entrypoint(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """scripts/container-entrypoint.sh as the image runs it: `python` is the one with our dependencies."""
    env = python_env({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    return subprocess.run(
        [str(ENTRYPOINT), *arguments], env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_image_is_built_in_stages_and_runs_as_the_non_root_user_the_manifests_expect() -> None:
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    # The final stage takes the dependencies from the build stage and installs nothing itself.
    build_name = instructions(build, "FROM")[0].value[-1]
    assert any(f"--from={build_name}" in command.flags for command in instructions(final, "COPY"))
    assert not [command for command in instructions(final, "RUN") if "pip install" in command.original]
    (user,) = instructions(final, "USER")
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0
    # Numeric, so Kubernetes' runAsNonRoot can verify it, and the same uid the pods ask for.
    for kustomization in KUSTOMIZATIONS.values():
        for workload, _ in containers(render(kustomization)):
            assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_the_entrypoint_is_the_script_and_every_copied_path_exists_and_is_not_ignored() -> None:
    final = stages()[-1]
    (entry,) = instructions(final, "ENTRYPOINT")
    (workdir,) = instructions(final, "WORKDIR")
    assert entry.json
    assert entry.value == (f"{workdir.value[0]}/scripts/container-entrypoint.sh",)
    assert os.access(ENTRYPOINT, os.X_OK)
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for stage in stages():
        for command in instructions(stage, "COPY"):
            if any(flag.startswith("--from=") for flag in command.flags):
                continue
            *sources, _ = command.value
            for source in sources:
                path = source.rstrip("/")
                assert (REPO / path).exists(), source
                assert not [pattern for pattern in ignored if fnmatch.fnmatch(path, pattern)], source
                copied.append(path)
    assert "scripts/container-entrypoint.sh" in copied
    # Every package a process of the image imports from this repository is copied in.
    assert {"gen", "service_runtime", "services", "mcp_adapter"} <= set(copied)
    # Local state and secrets never reach the build context.
    assert {".git", ".venv", ".data", "node_modules"} <= set(ignored)


def test_the_entrypoint_starts_each_process_the_manifests_name() -> None:
    named = {container["args"][0] for container in (c for _, c in containers(render(KUSTOMIZATIONS["overlay"])))}
    assert named <= set(PROCESSES)
    for name, program in PROCESSES.items():
        result = entrypoint([name, "--help"])
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith(f"usage: {program}"), (name, result.stdout[:200])


def test_the_entrypoint_refuses_an_unknown_process_naming_the_known_ones() -> None:
    for arguments in (["monitor-svc"], []):
        result = entrypoint(arguments)
        assert result.returncode == 2
        assert "{monitor|alert|notify|runner|mcp|admin}" in result.stderr


def test_the_entrypoint_execs_the_process_so_sigterm_reaches_it_and_it_drains(tmp_path: Path) -> None:
    """Kubernetes signals the container's first process: the script must become the server (exec), not wait
    on it, or SIGTERM would kill the shell and the server would never drain."""
    address = f"127.0.0.1:{free_port()}"
    env = python_env(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MONITORS_DATA_DIR": str(tmp_path),
            "MONITORS_MONITOR_LISTEN": address,
            "MONITORS_PING_LISTEN": f"127.0.0.1:{free_port()}",
            "MONITORS_DRAIN_DELAY_S": "0",
        }
    )
    log = (tmp_path / "monitor.log").open("wb")
    process = subprocess.Popen([str(ENTRYPOINT), "monitor"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "monitor.log").read_text()
            try:
                if health(address) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:  # not listening yet
                pass
            assert time.monotonic() < deadline, (tmp_path / "monitor.log").read_text()
            time.sleep(0.1)
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert command_line[1:3] == [b"-m", b"services.monitor_svc"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert b'"stopped"' in (tmp_path / "monitor.log").read_bytes()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
