"""gRPC failures turned into tool errors the model can act on.

google.rpc details (BadRequest, ErrorInfo) are read from the ``grpc-status-details-bin`` trailer with message
classes built here from a descriptor, so the installed adapter needs neither grpcio-status nor
googleapis-common-protos. The wire format is all that matters, so they live in a private pool and package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from mcp.server.mcpserver.exceptions import ToolError

_PACKAGE = "mcp_adapter.rpc"


def _build_messages() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(any_pb2.DESCRIPTOR.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(
        name="mcp_adapter/rpc.proto", package=_PACKAGE, dependency=["google/protobuf/any.proto"], syntax="proto3"
    )
    string, int32, message = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    )
    optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )

    def add(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        msg = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            msg.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name or None)

    add(
        "Status",
        [
            ("code", 1, int32, optional, ""),
            ("message", 2, string, optional, ""),
            ("details", 3, message, repeated, ".google.protobuf.Any"),
        ],
    )
    add("FieldViolation", [("field", 1, string, optional, ""), ("description", 2, string, optional, "")])
    add("BadRequest", [("field_violations", 1, message, repeated, f".{_PACKAGE}.FieldViolation")])
    # ErrorInfo's metadata is a map<string, string>: on the wire, repeated entries of a nested message marked as
    # a map entry. The services put the limit a RESOURCE_EXHAUSTED hit under "limit".
    add(
        "ErrorInfo",
        [
            ("reason", 1, string, optional, ""),
            ("domain", 2, string, optional, ""),
            ("metadata", 3, message, repeated, f".{_PACKAGE}.ErrorInfo.MetadataEntry"),
        ],
    )
    entry = file.message_type[-1].nested_type.add(name="MetadataEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=string, label=optional)
    entry.field.add(name="value", number=2, type=string, label=optional)
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("Status", "BadRequest", "ErrorInfo")
    }


_MESSAGES = _build_messages()


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call's google.rpc.Status says beyond its code and message."""

    field_violations: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    metadata: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str:
        return next((value for name, value in self.metadata if name == key), "")


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """The BadRequest violations and ErrorInfo reason of a failed call, when it carries them."""
    trailers = error.trailing_metadata() or ()
    raw = next((value for key, value in trailers if key == "grpc-status-details-bin"), None)
    if not isinstance(raw, bytes):
        return ErrorDetails()
    try:
        status = _MESSAGES["Status"].FromString(raw)
    except Exception:  # noqa: BLE001 - a malformed trailer only loses the details
        return ErrorDetails()
    violations: list[tuple[str, str]] = []
    reason = ""
    metadata: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.type_url.endswith("/google.rpc.BadRequest"):
            bad_request = _MESSAGES["BadRequest"].FromString(detail.value)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
        elif detail.type_url.endswith("/google.rpc.ErrorInfo"):
            info = _MESSAGES["ErrorInfo"].FromString(detail.value)
            reason = info.reason
            metadata.extend(sorted(info.metadata.items()))
    return ErrorDetails(tuple(violations), reason, tuple(metadata))


@dataclass(frozen=True)
class Subject:
    """What a call is about, so a NOT_FOUND can name it and say which tool lists its kind."""

    kind: str
    id: str
    list_tool: str


class AdapterError(ToolError):
    """A tool failure whose text tells the model what happened and what to do next."""


# What to do about each limit the services name in ErrorInfo.metadata["limit"].
_LIMIT_ADVICE = {
    "monitors_per_user": "delete a monitor you no longer need (list_monitors), or pause instead of adding",
    "rules_per_user": "delete an alert rule you no longer need (list_alert_rules)",
    "channels_per_user": "delete a channel you no longer need (list_channels)",
    "run_checks_per_user": "run checks one after another: wait for a running check to answer, then retry",
    "run_checks_in_flight": "the server is busy with checks: retry in a few seconds",
    "run_check_rate": "wait as long as it says, then run the one check you need most (not a loop of checks)",
    "test_channel_rate": "wait as long as it says before testing a channel again; one test per change is enough",
    "login_codes_per_client": "wait a few minutes before asking for another code",
    "login_codes_per_address": "wait a few minutes before asking for another code; use the last one sent",
    "login_codes_per_address_per_day": "no more codes for this address today; use the last one sent",
    "login_attempts_per_client": "wait a few minutes before trying a code again",
}


def exhausted_error(message: str, details: ErrorDetails) -> AdapterError:
    """RESOURCE_EXHAUSTED, with the way out that fits the limit hit."""
    limit = details.get("limit")
    advice = _LIMIT_ADVICE.get(limit)
    if advice is None:
        advice = f"a limit of this deployment ({limit or 'unnamed'}): wait and retry, or ask its operator"
    return AdapterError(f"{message}; {advice}")


def tool_error(
    error: grpc.aio.AioRpcError, *, service: str, target: str, subject: Subject | None = None, over_http: bool = False
) -> AdapterError:
    """The actionable tool error for a failed gRPC call to ``service`` at ``target``."""
    code = error.code()
    message = (error.details() or "").strip()
    details = error_details(error)
    if code == grpc.StatusCode.NOT_FOUND and subject is not None:
        return AdapterError(
            f"{subject.kind} {subject.id} not found; call {subject.list_tool} to see your {subject.kind}s"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return AdapterError(f"not found: {message}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if details.field_violations:
            named = "; ".join(f"{field}: {description}" for field, description in details.field_violations)
            return AdapterError(f"invalid argument ({named}); correct it and call again")
        return AdapterError(f"invalid argument: {message}; correct it and call again")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if over_http:
            return AdapterError("the API key this client presents is not valid any more; configure a new one")
        return AdapterError(
            "not logged in, or the session has ended: call request_login_code with your email address, then "
            "verify_login_code with the code it sends (or start the adapter with MONITORS_API_KEY set)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return AdapterError(f"not allowed: {message}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return exhausted_error(message, details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return AdapterError(f"cannot do that now: {message}")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AdapterError(f"already exists: {message}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return AdapterError(
            f"{service} at {target} does not offer this yet (it answered UNIMPLEMENTED): this deployment's "
            f"{service} is older than the adapter; the tool works once it is upgraded"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return AdapterError(
            f"cannot reach {service} at {target} ({message or 'unavailable'}); check that it is running "
            "(`make run` starts everything locally), then retry"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AdapterError(f"{service} at {target} did not answer in time; retry, or check the service's health")
    return AdapterError(f"{service} failed ({code.name}): {message or 'no details'}")
