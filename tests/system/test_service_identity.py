"""Service identity: each role (a runner, the alert service, the monitor service, the operator) calls with a
token of its own, and each internal RPC takes only the roles that need it. A runner runs users' checks with
internet egress: its token must not send notifications nor read every monitor's events.

The three services run as real processes on real sockets (embedded stores), with each role's token set."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from harness.rpc import auth
from harness.services import Stack, role_tokens_env
from monitors.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.settings import ROLE_TOKENS, Role

mpb, npb = monitor_service_pb2, notification_service_pb2
TOKENS = role_tokens_env("identity")
ROLES: tuple[Role, ...] = ("runner", "alert", "monitor", "operator")
# The specification: which role may call which internal RPC. Every other pair is PERMISSION_DENIED.
ALLOWED: dict[str, set[Role]] = {
    "WatchAssignments": {"runner"},
    "ReportResults": {"runner"},
    "WatchMonitorEvents": {"alert"},
    "SendNotification": {"alert", "monitor"},
    "GetDeploymentStatus": {"operator"},  # the fleet view; users may call it too, for their own monitors
}
Who = tuple[tuple[str, str]]
_keys = itertools.count()


@dataclass
class Clients:
    """Stubs for the monitor, notification and alert services of one stack, over channels opened once."""

    channels: list[grpc.Channel]
    monitors: monitor_service_pb2_grpc.MonitorServiceStub
    notifications: notification_service_pb2_grpc.NotificationServiceStub
    alerts: alert_service_pb2_grpc.AlertServiceStub

    @classmethod
    def of(cls, stack: Stack) -> Clients:
        channels = [grpc.insecure_channel(stack.address(name)) for name in ("monitor", "notify", "alert")]
        return cls(
            channels,
            monitor_service_pb2_grpc.MonitorServiceStub(channels[0]),
            notification_service_pb2_grpc.NotificationServiceStub(channels[1]),
            alert_service_pb2_grpc.AlertServiceStub(channels[2]),
        )

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def token_of(role: Role, tokens: dict[str, str] = TOKENS) -> Who:
    return auth(tokens[ROLE_TOKENS[role][0]])


def watch_assignments(clients: Clients, who: Who) -> object:
    stream = clients.monitors.WatchAssignments(
        mpb.WatchAssignmentsRequest(runner_id="identity-runner", location="identity"), metadata=who, timeout=5
    )
    try:
        return next(stream)
    finally:
        stream.cancel()


def report_results(clients: Clients, who: Who) -> object:
    return clients.monitors.ReportResults(
        iter([mpb.ReportResultsRequest(runner_id="identity-runner")]), metadata=who, timeout=5
    )


def watch_monitor_events(clients: Clients, who: Who) -> object:
    stream = clients.monitors.WatchMonitorEvents(mpb.WatchMonitorEventsRequest(), metadata=who, timeout=5)
    try:
        return next(stream)
    finally:
        stream.cancel()


def send_notification(clients: Clients, who: Who) -> object:
    request = npb.SendNotificationRequest(
        idempotency_key=f"identity-{next(_keys)}",
        email_address="identity@example.com",
        notification=npb.Notification(kind=npb.NOTIFICATION_KIND_LOGIN_CODE, login_code="135790"),
    )
    return clients.notifications.SendNotification(request, metadata=who, timeout=5)


def get_deployment_status(clients: Clients, who: Who) -> object:
    return clients.monitors.GetDeploymentStatus(mpb.GetDeploymentStatusRequest(), metadata=who, timeout=5)


Call = Callable[[Clients, Who], object]
CALLS: dict[str, Call] = {
    "WatchAssignments": watch_assignments,
    "ReportResults": report_results,
    "WatchMonitorEvents": watch_monitor_events,
    "SendNotification": send_notification,
    "GetDeploymentStatus": get_deployment_status,
}


def code_of(call: Call, clients: Clients, who: Who) -> grpc.StatusCode:
    try:
        call(clients, who)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    with Stack(tmp_path_factory.mktemp("identity"), dict(TOKENS)) as stack:
        opened = Clients.of(stack)
        yield opened
        opened.close()


@pytest.mark.parametrize("method", sorted(ALLOWED))
@pytest.mark.parametrize("role", ROLES)
def test_each_role_calls_the_internal_rpcs_it_needs_and_no_other(clients: Clients, role: Role, method: str) -> None:
    code = code_of(CALLS[method], clients, token_of(role))
    if role in ALLOWED[method]:
        # ReportResults of a runner not watching its assignments is FAILED_PRECONDITION: past authentication.
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION), code
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_runners_token_is_refused_on_sending_notifications_and_on_the_event_feed(clients: Clients) -> None:
    """The issue's case in so many words: a runner cannot mail anyone nor read every monitor's events."""
    runner = token_of("runner")
    assert code_of(send_notification, clients, runner) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(watch_monitor_events, clients, runner) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(watch_assignments, clients, runner) == grpc.StatusCode.OK


@pytest.mark.parametrize("role", ROLES)
def test_no_roles_token_opens_a_users_methods_in_any_service(clients: Clients, role: Role) -> None:
    who = token_of(role)
    users_calls: list[Callable[[], object]] = [
        lambda: clients.monitors.ListMonitors(mpb.ListMonitorsRequest(), metadata=who, timeout=5),
        lambda: clients.notifications.ListChannels(npb.ListChannelsRequest(), metadata=who, timeout=5),
        lambda: clients.alerts.ListAlertRules(alert_service_pb2.ListAlertRulesRequest(), metadata=who, timeout=5),
    ]
    for call in users_calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()


def test_a_rotated_runner_token_leaves_the_other_roles_working(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The runners' token changes: the monitor service and the runners restart with the new one, the alert and
    notification services are not touched, and the alert service's token goes on working on both."""
    with Stack(tmp_path_factory.mktemp("rotation"), dict(TOKENS)) as stack:
        clients = Clients.of(stack)
        try:
            before = stack.runner("before-rotation")
            before.start()  # SERVING once its first assignments came over its stream
            before.stop()
            rotated = {**TOKENS, "MONITORS_RUNNER_TOKEN": "identity-runner-token-rotated-9876543210"}
            monitor = stack.services["monitor"]
            monitor.stop()
            monitor.env = {**monitor.env, "MONITORS_RUNNER_TOKEN": rotated["MONITORS_RUNNER_TOKEN"]}
            monitor.start()
            assert code_of(watch_assignments, clients, token_of("runner")) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(watch_assignments, clients, token_of("runner", rotated)) == grpc.StatusCode.OK
            after = stack.runner("after-rotation")  # the monitor service's environment: the new token
            after.start()
            after.stop()
            # Neither the alert nor the notification service restarted; the alert service's token works on both.
            for name in ("alert", "notify"):
                process = stack.services[name].process
                assert process is not None
                assert process.poll() is None
            assert code_of(watch_monitor_events, clients, token_of("alert")) == grpc.StatusCode.OK
            assert code_of(send_notification, clients, token_of("alert")) == grpc.StatusCode.OK
            assert code_of(send_notification, clients, token_of("monitor")) == grpc.StatusCode.OK
        finally:
            clients.close()


def test_while_a_runner_token_is_rotated_the_monitor_service_accepts_the_new_and_the_old(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """MONITORS_RUNNER_TOKEN="new,old" on the monitor service: runners still on the old token go on while they
    are restarted with the new one, one by one; the old one goes when the list does."""
    new, old = "identity-runner-token-next-1357924680", TOKENS["MONITORS_RUNNER_TOKEN"]
    with Stack(tmp_path_factory.mktemp("overlap"), dict(TOKENS)) as stack:
        clients = Clients.of(stack)
        try:
            monitor = stack.services["monitor"]
            monitor.stop()
            monitor.env = {**monitor.env, "MONITORS_RUNNER_TOKEN": f"{new},{old}"}
            monitor.start()
            assert code_of(watch_assignments, clients, auth(old)) == grpc.StatusCode.OK
            assert code_of(watch_assignments, clients, auth(new)) == grpc.StatusCode.OK
            runner = stack.runner("rotated", MONITORS_RUNNER_TOKEN=new)
            runner.start()  # SERVING once its first assignments came over its stream: the new token is taken
            runner.stop()
            assert code_of(send_notification, clients, auth(old)) == grpc.StatusCode.PERMISSION_DENIED
            assert code_of(send_notification, clients, auth(new)) == grpc.StatusCode.PERMISSION_DENIED
        finally:
            clients.close()
