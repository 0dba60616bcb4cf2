"""`pip install ./mcp_adapter` into a fresh virtualenv gives a working `monitors-mcp` with only mcp, grpcio,
protobuf, matplotlib (and their dependencies) and the generated stubs: no server code, no database drivers. The
installed command then serves a client over stdio against the real services, run from outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from harness.mcp import McpStack, call
from harness.services import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the adapter installed from its directory (through the machine's package index)."""
    venv = tmp_path_factory.mktemp("adapter-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(REPO / "mcp_adapter")],
        check=True,
        timeout=540,
        env=environment,
        cwd=venv,
        capture_output=True,
    )
    return venv


@pytest.mark.timeout(600)
def test_the_adapter_installs_alone_with_only_its_dependencies(installed: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_text = subprocess.run(
        [str(installed / "bin" / "monitors-mcp"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=environment,
        cwd=installed,
    ).stdout
    assert "--transport {stdio,http}" in help_text
    assert "--read-only" in help_text
    packages = subprocess.run(
        [str(installed / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=environment,
    ).stdout.lower()
    names = {line.split("==")[0] for line in packages.splitlines()}
    assert {"monitors-mcp", "mcp", "grpcio", "protobuf", "matplotlib"} <= names
    assert not names & {"sqlalchemy", "alembic", "pymysql", "redis", "influxdb-client", "apprise", "sendgrid"}
    probe = (
        "import importlib.util as u, monitors.v1.alert_service_pb2, mcp_adapter.server;"
        "print(u.find_spec('services'), u.find_spec('service_runtime'))"
    )
    found = subprocess.run(
        [str(installed / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=environment,
        cwd=installed,
    ).stdout
    assert found.split() == ["None", "None"]


@pytest.mark.timeout(600)
async def test_the_installed_command_serves_claude_over_stdio(installed: Path, mcp_stack: McpStack) -> None:
    key = mcp_stack.stack.create_api_key("laptop@example.com")
    env = {k: v for k, v in mcp_stack.adapter_env(MONITORS_API_KEY=key).items() if k != "PYTHONPATH"}
    parameters = StdioServerParameters(command=str(installed / "bin" / "monitors-mcp"), env=env, cwd=str(installed))
    with (mcp_stack.logs / "installed.log").open("a") as errlog:
        async with stdio_client(parameters, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            assert (await call(session, "whoami"))["email"] == "laptop@example.com"
            created = await call(session, "create_monitor", kind="website", target="https://laptop.example")
            listed = await call(session, "list_monitors")
            assert [m["id"] for m in listed["monitors"]] == [created["monitor"]["id"]]
