"""Secrets over gRPC: write-only values sealed at rest, {{secret:NAME}} in monitors, delivered to the runner
that checks the monitor and to nobody else, isolation between users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from harness.http import HttpServer, Reply
from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import common_pb2, monitor_service_pb2, monitor_service_pb2_grpc

pb = monitor_service_pb2
Metadata = tuple[tuple[str, str]]
VALUE = "s3cr3t-value-7f9a2c"


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An embedded stack whose monitor service may reach loopback (RunCheck against a local target)."""
    with Stack(tmp_path_factory.mktemp("secrets"), {"MONITORS_EGRESS": "private-allowed"}) as started:
        yield started


def stub_for(stack: Stack) -> monitor_service_pb2_grpc.MonitorServiceStub:
    return monitor_service_pb2_grpc.MonitorServiceStub(grpc.insecure_channel(stack.address("monitor")))


def user(stack: Stack, name: str) -> Metadata:
    return auth(stack.create_api_key(f"{name}@example.com"))


def with_header(url: str, header: str) -> pb.Monitor:
    website = common_pb2.WebsiteSpec(url=url, headers={"authorization": header})
    return pb.Monitor(spec=common_pb2.MonitorSpec(website=website))


def failure(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def violated_fields(error: grpc.RpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return [v.field for v in bad.field_violations]


def test_put_list_replace_delete_never_return_the_value(stack: Stack) -> None:
    stub, alice = stub_for(stack), user(stack, "alice.secrets")
    first = stub.PutSecret(pb.PutSecretRequest(name="API_TOKEN", value=VALUE), metadata=alice, timeout=5).secret
    assert first.name == "API_TOKEN"
    assert first.create_time.seconds > 0
    stub.PutSecret(pb.PutSecretRequest(name="B_TOKEN", value="other"), metadata=alice, timeout=5)
    replaced = stub.PutSecret(pb.PutSecretRequest(name="API_TOKEN", value=VALUE + "2"), metadata=alice, timeout=5)
    assert replaced.secret.create_time == first.create_time
    assert replaced.secret.update_time.ToNanoseconds() >= first.update_time.ToNanoseconds()
    page = stub.ListSecrets(pb.ListSecretsRequest(page_size=1), metadata=alice, timeout=5)
    rest = stub.ListSecrets(pb.ListSecretsRequest(page_token=page.next_page_token), metadata=alice, timeout=5)
    assert [s.name for s in [*page.secrets, *rest.secrets]] == ["API_TOKEN", "B_TOKEN"]
    assert VALUE not in str(page) + str(rest) + str(replaced)
    stub.DeleteSecret(pb.DeleteSecretRequest(name="B_TOKEN"), metadata=alice, timeout=5)
    listed = stub.ListSecrets(pb.ListSecretsRequest(), metadata=alice, timeout=5)
    assert [s.name for s in listed.secrets] == ["API_TOKEN"]
    gone = failure(lambda: stub.DeleteSecret(pb.DeleteSecretRequest(name="B_TOKEN"), metadata=alice, timeout=5))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("", "v", "name"),
        ("1ABC", "v", "name"),
        ("HAS-DASH", "v", "name"),
        ("A" * 65, "v", "name"),
        ("OK", "", "value"),
        ("OK", "x" * (8 * 1024 + 1), "value"),
    ],
)
def test_bad_names_and_values_are_refused_naming_the_field(stack: Stack, name: str, value: str, field: str) -> None:
    stub, alice = stub_for(stack), user(stack, "alice.secrets")
    error = failure(lambda: stub.PutSecret(pb.PutSecretRequest(name=name, value=value), metadata=alice, timeout=5))
    assert violated_fields(error) == [field]


def test_monitors_refer_to_secrets_that_exist_and_in_use_secrets_cannot_be_deleted(stack: Stack) -> None:
    stub, carol, dave = stub_for(stack), user(stack, "carol.secrets"), user(stack, "dave.secrets")
    monitor = with_header("https://example.com/", "Bearer {{secret:CAROL_TOKEN}}")
    error = failure(lambda: stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=carol, timeout=5))
    assert violated_fields(error) == ["monitor.spec"]
    assert "CAROL_TOKEN" in str(error.details())
    stub.PutSecret(pb.PutSecretRequest(name="CAROL_TOKEN", value=VALUE), metadata=carol, timeout=5)
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=carol, timeout=5).monitor
    assert created.spec.website.headers["authorization"] == "Bearer {{secret:CAROL_TOKEN}}"  # the reference only

    in_use = failure(lambda: stub.DeleteSecret(pb.DeleteSecretRequest(name="CAROL_TOKEN"), metadata=carol, timeout=5))
    assert in_use.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert created.id in str(in_use.details())

    # Dave cannot see, delete or use Carol's secret.
    assert not stub.ListSecrets(pb.ListSecretsRequest(), metadata=dave, timeout=5).secrets
    theirs = failure(lambda: stub.DeleteSecret(pb.DeleteSecretRequest(name="CAROL_TOKEN"), metadata=dave, timeout=5))
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    borrowed = failure(lambda: stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=dave, timeout=5))
    assert violated_fields(borrowed) == ["monitor.spec"]

    stub.DeleteMonitor(pb.DeleteMonitorRequest(id=created.id), metadata=carol, timeout=5)
    stub.DeleteSecret(pb.DeleteSecretRequest(name="CAROL_TOKEN"), metadata=carol, timeout=5)


def test_run_check_substitutes_the_secret_and_masks_it_in_messages(local_stack: Stack) -> None:
    stub, erin = stub_for(local_stack), user(local_stack, "erin.secrets")
    seen: list[str] = []

    def protected(path: str, headers: dict[str, str], body: bytes) -> Reply:
        seen.append(headers.get("authorization", ""))
        return Reply(200 if headers.get("authorization") == f"Bearer {VALUE}" else 401, b"echo " + VALUE.encode())

    with HttpServer() as target:
        target.routes["/private"] = protected
        stub.PutSecret(pb.PutSecretRequest(name="ERIN_TOKEN", value=VALUE), metadata=erin, timeout=5)
        good = with_header(target.url("/private"), "Bearer {{secret:ERIN_TOKEN}}").spec
        result = stub.RunCheck(pb.RunCheckRequest(spec=good), metadata=erin, timeout=10).result
        assert result.is_up, result
        assert seen == [f"Bearer {VALUE}"]

        # A failing check whose message would carry the value (the unresolvable host name) masks it.
        leaky = common_pb2.WebsiteSpec(url="http://{{secret:ERIN_TOKEN}}.invalid/")
        failed = stub.RunCheck(
            pb.RunCheckRequest(spec=common_pb2.MonitorSpec(website=leaky)), metadata=erin, timeout=10
        ).result
        assert failed.error_class == common_pb2.ERROR_CLASS_DNS, failed
        assert "****.invalid" in failed.message
        assert VALUE not in str(failed)


def test_values_are_sealed_at_rest(local_stack: Stack) -> None:
    stub, frank = stub_for(local_stack), user(local_stack, "frank.secrets")
    marker = "plaintext-marker-91c3d5e7"
    stub.PutSecret(pb.PutSecretRequest(name="FRANK", value=marker), metadata=frank, timeout=5)
    for database in Path(local_stack.data_dir).glob("*.sqlite3*"):
        assert marker.encode() not in database.read_bytes(), database


def test_a_runner_receives_the_values_of_its_monitors_secrets_and_their_changes(stack: Stack) -> None:
    stub, gina, hal = stub_for(stack), user(stack, "gina.secrets"), user(stack, "hal.secrets")
    stub.PutSecret(pb.PutSecretRequest(name="GINA", value="gina-1"), metadata=gina, timeout=5)
    stub.PutSecret(pb.PutSecretRequest(name="UNUSED", value="never-sent"), metadata=gina, timeout=5)
    stub.PutSecret(pb.PutSecretRequest(name="GINA", value="hal-own"), metadata=hal, timeout=5)
    spec = with_header("https://example.com/", "Bearer {{secret:GINA}}").spec
    token = stack.role_token("runner")
    # A runner has served the location once, so that a monitor may name it.
    scout = pb.WatchAssignmentsRequest(runner_id="secret-test-scout", location="secrets-only")
    first_contact = stub.WatchAssignments(scout, metadata=auth(token), timeout=10)
    next(first_contact)
    first_contact.cancel()
    located = pb.Monitor(spec=spec, locations=["secrets-only"])
    created = stub.CreateMonitor(pb.CreateMonitorRequest(monitor=located), metadata=gina, timeout=5).monitor
    request = pb.WatchAssignmentsRequest(runner_id="secret-test-runner", location="secrets-only", capacity=100_000)
    stream = stub.WatchAssignments(request, metadata=auth(token), timeout=10)
    try:
        first = next(stream)
        assert first.full_sync
        assigned = {a.monitor.id: dict(a.secrets) for a in first.upserts}
        assert assigned[created.id] == {"GINA": "gina-1"}
        # Monitors of other tests without a location may land here too; none carries a value it does not use.
        sent = {value for secrets in assigned.values() for value in secrets.values()}
        assert not sent & {"never-sent", "hal-own"}
        stub.PutSecret(pb.PutSecretRequest(name="GINA", value="gina-2"), metadata=gina, timeout=5)
        change = next(stream)
        assert [(a.monitor.id, dict(a.secrets)) for a in change.upserts] == [(created.id, {"GINA": "gina-2"})]
    finally:
        stream.cancel()
        stub.DeleteMonitor(pb.DeleteMonitorRequest(id=created.id), metadata=gina, timeout=5)
