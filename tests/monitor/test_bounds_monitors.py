"""Every repeated and map field of a monitor is bounded, and so is a monitor as a whole and the secrets a user
keeps: one user cannot grow what the store, the runners' sync and every caller carry. Over a real server:
INVALID_ARGUMENT naming the field past a bound, the largest monitor the bounds allow is taken, and its
protobuf encoding stays within MAX_MONITOR_BYTES."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc
from services.monitor_svc.domain import (
    MAX_BODY,
    MAX_EXPECTED_ANSWER,
    MAX_EXPECTED_ANSWERS,
    MAX_HEADERS,
    MAX_HEADERS_BYTES,
    MAX_JSON_EXPECTED,
    MAX_JSON_PATH,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_MONITOR_BYTES,
    MAX_STATUS_RANGES,
    MonitorDraft,
    WebsiteSpec,
    encoded_size,
)
from services.monitor_svc.translate import draft_to_proto
from services.monitor_svc.user_secrets import MAX_SECRETS_PER_USER

pb = monitor_service_pb2
Metadata = tuple[tuple[str, str]]


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[monitor_service_pb2_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)


@pytest.fixture(scope="module")
def dora(stack: Stack) -> Metadata:
    return auth(stack.create_api_key("dora.bounds@example.com"))


def refused(call: Any, request: Any, metadata: Metadata) -> list[str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    bad_request = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return [v.field for v in bad_request.field_violations]


def website(**fields: Any) -> common_pb2.MonitorSpec:
    return common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url="https://example.com/", **fields))


def headers_of(total: int, count: int = MAX_HEADERS) -> dict[str, str]:
    """``count`` headers whose names and values add up to ``total`` bytes."""
    names = [f"x-h{i:02d}" for i in range(count)]
    each, extra = divmod(total - sum(map(len, names)), count)
    return {name: "v" * (each + (1 if i < extra else 0)) for i, name in enumerate(names)}


def labels_of(count: int) -> dict[str, str]:
    return {f"k{i:05d}": "v" * MAX_LABEL_VALUE for i in range(count)}


CASES: dict[str, tuple[pb.Monitor, str]] = {
    "10,000 labels of 200 characters": (pb.Monitor(spec=website(), labels=labels_of(10_000)), "monitor.labels"),
    "one label too many": (pb.Monitor(spec=website(), labels=labels_of(MAX_LABELS + 1)), "monitor.labels"),
    "50 headers of 8 KiB": (
        pb.Monitor(spec=website(headers={f"x-h{i}": "v" * 8192 for i in range(50)})),
        "monitor.spec.website.headers",
    ),
    "headers a byte over": (
        pb.Monitor(spec=website(headers=headers_of(MAX_HEADERS_BYTES + 1))),
        "monitor.spec.website.headers",
    ),
    "one header too many": (
        pb.Monitor(spec=website(headers={f"x-h{i}": "v" for i in range(MAX_HEADERS + 1)})),
        "monitor.spec.website.headers",
    ),
    "too many status ranges": (
        pb.Monitor(
            spec=website(accepted_status_codes=[common_pb2.StatusCodeRange(min=200, max=200)] * (MAX_STATUS_RANGES + 1))
        ),
        "monitor.spec.website.accepted_status_codes",
    ),
    "a long JSON path": (
        pb.Monitor(
            spec=website(
                json_path=common_pb2.JsonPathAssertion(
                    path="$." + "a" * MAX_JSON_PATH,
                    operator=common_pb2.COMPARISON_OPERATOR_EQUAL,
                    expected="1",
                )
            )
        ),
        "monitor.spec.website.json_path.path",
    ),
    "a long JSON expected value": (
        pb.Monitor(
            spec=website(
                json_path=common_pb2.JsonPathAssertion(
                    path="$.a", operator=common_pb2.COMPARISON_OPERATOR_EQUAL, expected="1" * (MAX_JSON_EXPECTED + 1)
                )
            )
        ),
        "monitor.spec.website.json_path.expected",
    ),
    "too many DNS answers": (
        pb.Monitor(
            spec=common_pb2.MonitorSpec(
                dns=common_pb2.DnsSpec(
                    name="example.com", expected_answers=[f"192.0.2.{i}" for i in range(MAX_EXPECTED_ANSWERS + 1)]
                )
            )
        ),
        "monitor.spec.dns.expected_answers",
    ),
    "a long DNS answer": (
        pb.Monitor(
            spec=common_pb2.MonitorSpec(
                dns=common_pb2.DnsSpec(
                    name="example.com", record_type=common_pb2.DNS_RECORD_TYPE_TXT, expected_answers=["t" * 100_000]
                )
            )
        ),
        "monitor.spec.dns.expected_answers[0]",
    ),
    "100,000 crypto providers": (
        pb.Monitor(
            spec=common_pb2.MonitorSpec(
                crypto_price=common_pb2.CryptoPriceSpec(
                    pair="BTC-USD", providers=[common_pb2.CryptoProvider.ValueType(99)] * 100_000
                )
            )
        ),
        "monitor.spec.crypto_price.providers",
    ),
    # Each field within its bound, the whole past it: 64 Ki characters of two bytes each.
    "a body of 64 Ki two-byte characters": (pb.Monitor(spec=website(body="é" * MAX_BODY)), "monitor"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_past_a_bound_is_invalid_argument_naming_the_field(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, dora: Metadata, case: str
) -> None:
    monitor, field = CASES[case]
    assert refused(stub.CreateMonitor, pb.CreateMonitorRequest(monitor=monitor), dora) == [field]
    # One violation however many entries are wrong, so the error itself stays small; RunCheck takes the same.
    if field.startswith("monitor.spec"):
        assert refused(stub.RunCheck, pb.RunCheckRequest(spec=monitor.spec), dora) == [field.removeprefix("monitor.")]
    elif field == "monitor":
        assert refused(stub.RunCheck, pb.RunCheckRequest(spec=monitor.spec), dora) == ["spec"]


def test_an_update_past_a_bound_is_refused(stub: monitor_service_pb2_grpc.MonitorServiceStub, dora: Metadata) -> None:
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=pb.Monitor(spec=website())), metadata=dora).monitor
    update = pb.UpdateMonitorRequest(
        monitor=pb.Monitor(id=created.id, labels=labels_of(MAX_LABELS + 1)),
        update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
    )
    assert refused(stub.UpdateMonitor, update, dora) == ["monitor.labels"]
    stub.DeleteMonitor(pb.DeleteMonitorRequest(id=created.id), metadata=dora)


def test_the_largest_monitor_the_bounds_allow_is_taken_and_fits(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, dora: Metadata
) -> None:
    monitor = pb.Monitor(
        display_name="d" * 200,
        spec=website(
            body="b" * MAX_BODY,
            headers=headers_of(MAX_HEADERS_BYTES),
            accepted_status_codes=[common_pb2.StatusCodeRange(min=200, max=299)] * MAX_STATUS_RANGES,
            json_path=common_pb2.JsonPathAssertion(
                path="$." + "a" * (MAX_JSON_PATH - 2),
                operator=common_pb2.COMPARISON_OPERATOR_EQUAL,
                expected="e" * MAX_JSON_EXPECTED,
            ),
        ),
        labels=labels_of(MAX_LABELS),
    )
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=dora, timeout=10).monitor
    assert created.ByteSize() <= MAX_MONITOR_BYTES
    assert len(created.labels) == MAX_LABELS
    dns = common_pb2.MonitorSpec(
        dns=common_pb2.DnsSpec(
            name="example.com",
            record_type=common_pb2.DNS_RECORD_TYPE_TXT,
            expected_answers=["t" * MAX_EXPECTED_ANSWER] * MAX_EXPECTED_ANSWERS,
        )
    )
    stub.CreateMonitor(pb.CreateMonitorRequest(monitor=pb.Monitor(spec=dns)), metadata=dora, timeout=10)


@settings(max_examples=50, deadline=None)
@given(
    url_path=st.text(max_size=200),
    body=st.text(max_size=2000),
    headers=st.dictionaries(st.from_regex(r"[a-z]{1,20}", fullmatch=True), st.text(max_size=100), max_size=10),
    labels=st.dictionaries(st.from_regex(r"[a-z]{1,20}", fullmatch=True), st.text(max_size=200), max_size=10),
)
def test_the_size_estimate_is_never_below_the_protobuf_encoding(
    url_path: str, body: str, headers: dict[str, str], labels: dict[str, str]
) -> None:
    spec = WebsiteSpec(url=f"https://example.com/{url_path}", headers=headers, body=body)
    draft = MonitorDraft(spec=spec, display_name=body[:200], labels=labels, locations=("eu", "us"))
    assert encoded_size(draft) >= draft_to_proto(draft).ByteSize()


def test_a_user_keeps_a_bounded_number_of_secrets(
    stub: monitor_service_pb2_grpc.MonitorServiceStub, stack: Stack
) -> None:
    erin = auth(stack.create_api_key("erin.bounds@example.com"))
    for i in range(MAX_SECRETS_PER_USER):
        stub.PutSecret(pb.PutSecretRequest(name=f"S{i}", value="v"), metadata=erin, timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        stub.PutSecret(pb.PutSecretRequest(name="ONE_MORE", value="v"), metadata=erin, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = next(d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.metadata["limit"] == "secrets_per_user"
    stub.PutSecret(pb.PutSecretRequest(name="S0", value="changed"), metadata=erin, timeout=10)  # a change is fine
    stub.DeleteSecret(pb.DeleteSecretRequest(name="S1"), metadata=erin, timeout=10)
    stub.PutSecret(pb.PutSecretRequest(name="ONE_MORE", value="v"), metadata=erin, timeout=10)
