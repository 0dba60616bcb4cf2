"""The contracts: complete, lint-clean, generated code fresh, and usable from another language."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from pathlib import Path

from harness.services import REPO, Stack
from monitors.v1 import account_service_pb2, alert_service_pb2, monitor_service_pb2, notification_service_pb2

EXPECTED_RPCS = {
    account_service_pb2.DESCRIPTOR.services_by_name["AccountService"]: {
        "StartLogin",
        "CompleteLogin",
        "Logout",
        "GetCurrentUser",
        "CreateApiKey",
        "ListApiKeys",
        "DeleteApiKey",
    },
    monitor_service_pb2.DESCRIPTOR.services_by_name["MonitorService"]: {
        "CreateMonitor",
        "GetMonitor",
        "ListMonitors",
        "UpdateMonitor",
        "DeleteMonitor",
        "PauseMonitor",
        "ResumeMonitor",
        "RunCheck",
        "GetMonitorStatus",
        "WatchMonitorStatus",
        "SuggestMonitors",
        "QuerySamples",
        "SummarizeMonitor",
        "SummarizeMonitors",
        "ListHeartbeatPings",
        "PutSecret",
        "ListSecrets",
        "DeleteSecret",
        "GetDeploymentStatus",
        "WatchAssignments",
        "ReportResults",
        "WatchMonitorEvents",
    },
    alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"]: {
        "CreateAlertRule",
        "GetAlertRule",
        "ListAlertRules",
        "UpdateAlertRule",
        "DeleteAlertRule",
        "TestAlertRule",
        "ListAlerts",
        "GetAlert",
        "AcknowledgeAlert",
        "ResolveAlert",
        "CreateSilence",
        "ListSilences",
        "DeleteSilence",
        "StreamEvaluations",
        "WatchAlerts",
    },
    notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"]: {
        "CreateChannel",
        "GetChannel",
        "ListChannels",
        "UpdateChannel",
        "DeleteChannel",
        "TestChannel",
        "SendNotification",
        "ListDeliveries",
    },
}
STREAMING = {
    "WatchAssignments": (False, True),
    "ReportResults": (True, False),
    "WatchMonitorEvents": (False, True),
    "WatchMonitorStatus": (False, True),
    "StreamEvaluations": (False, True),
    "WatchAlerts": (False, True),
}


def test_every_service_has_exactly_the_rpcs_of_the_design() -> None:
    for service, rpcs in EXPECTED_RPCS.items():
        assert {m.name for m in service.methods} == rpcs, service.full_name
        assert service.full_name.startswith("monitors.v1.")
        for method in service.methods:
            streaming = (method.client_streaming, method.server_streaming)
            assert streaming == STREAMING.get(method.name, (False, False)), method.full_name


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """Regenerate into a temp dir with the pinned tools; gen/ must match it file for file."""
    subprocess.run([str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, timeout=120)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(REPO / "gen") for p in (REPO / "gen").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "run `make protos`: the set of generated files differs"
    _, mismatched, errors = filecmp.cmpfiles(tmp_path, REPO / "gen", [str(p) for p in fresh], shallow=False)
    assert not mismatched, f"run `make protos`: stale files {mismatched}"
    assert not errors, f"run `make protos`: unreadable files {errors}"


def test_buf_lint_passes_with_the_standard_rules() -> None:
    config = (REPO / "buf.yaml").read_text()
    assert "STANDARD" in config
    assert "except" not in config
    assert "ignore" not in config
    npx = shutil.which("npx")
    assert npx, "npx is needed (Node.js); `make test` installs the npm packages"
    result = subprocess.run([npx, "--no-install", "buf", "lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_node_client_calls_a_running_service(embedded_stack: Stack) -> None:
    """@grpc/grpc-js with @grpc/proto-loader, loading protos/ directly: the contracts serve other languages."""
    key = embedded_stack.create_api_key("node@example.com")
    script = REPO / "tests" / "node" / "get_current_user.js"
    address = embedded_stack.address("monitor")
    ok = subprocess.run(["node", str(script), address, key], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["user"]["email"] == "node@example.com"
    refused = subprocess.run(["node", str(script), address, ""], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["code"] == 16  # UNAUTHENTICATED
