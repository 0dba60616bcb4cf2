"""The fault drills' workload (tests/drills/): one user's website monitors on local HTTP targets that a drill
makes fail and recover, one rule per monitor (its last check failed) to one webhook channel, and readers of
the alert service's streams.

Drills start their servers through harness; this module only creates what a user would (monitors, rules,
a channel) on a running :class:`~harness.services.Stack` and watches what comes back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc
from google.protobuf import duration_pb2

from harness.http import HttpServer, Reply
from harness.receivers import ProviderReceivers
from harness.rpc import auth
from harness.services import Stack
from harness.waiting import eventually
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    alert_service_pb2,
    alert_service_pb2_grpc,
    common_pb2,
    monitor_service_pb2,
    monitor_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)

apb = alert_service_pb2
mpb = monitor_service_pb2
npb = notification_service_pb2
M = TypeVar("M")


class Targets:
    """An HTTP server with one path per target (``/t/<n>``): 200, or 503 while the target is in :attr:`failing`."""

    def __init__(self) -> None:
        self.server = HttpServer()
        self.failing: set[int] = set()
        self.hits_by_target: Counter[int] = Counter()  # the checks each target answered

    def url(self, number: int) -> str:
        path = f"/t/{number}"
        self.server.routes[path] = lambda full, headers, body: self._answer(number)
        return self.server.url(path)

    def _answer(self, number: int) -> Reply:
        self.hits_by_target[number] += 1
        return Reply(503, b"failing") if number in self.failing else Reply(200, b"fine")

    def __enter__(self) -> Targets:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(None, None, None)


@dataclass
class Fleet:
    """One user's monitors (``monitors[n]`` checks target ``n``), a rule each ("the last check failed") and one
    webhook channel they notify."""

    stack: Stack
    key: tuple[tuple[str, str]]
    owner_id: str
    channel_id: str
    channel_path: str
    monitors: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        stack: Stack,
        targets: Targets,
        receivers: ProviderReceivers,
        name: str,
        count: int,
        interval_s: int = 1,
    ) -> Fleet:
        key = auth(stack.create_api_key(f"{name}@example.com"))
        with (
            grpc.insecure_channel(stack.address("monitor")) as monitor_channel,
            grpc.insecure_channel(stack.address("alert")) as alert_channel,
            grpc.insecure_channel(stack.address("notify")) as notify_channel,
        ):
            accounts = account_service_pb2_grpc.AccountServiceStub(monitor_channel)
            owner_id = accounts.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=key, timeout=10)
            notify = notification_service_pb2_grpc.NotificationServiceStub(notify_channel)
            channel = npb.Channel(display_name=name, webhook=npb.WebhookConfig(url=receivers.url("webhook", name)))
            channel_id = notify.CreateChannel(npb.CreateChannelRequest(channel=channel), metadata=key, timeout=10)
            fleet = cls(stack, key, owner_id.user.id, channel_id.channel.id, f"/webhook/{name}")
            alerts = alert_service_pb2_grpc.AlertServiceStub(alert_channel)
            monitors = monitor_service_pb2_grpc.MonitorServiceStub(monitor_channel)
            for number in range(count):
                monitor = mpb.Monitor(
                    display_name=f"{name}-{number}",
                    spec=common_pb2.MonitorSpec(website=common_pb2.WebsiteSpec(url=targets.url(number))),
                    interval=duration_pb2.Duration(seconds=interval_s),
                    # As long as the interval allows: the targets answer from this test process, which a loaded
                    # machine may keep from answering within a second (a failed check, rightly alerted).
                    timeout=duration_pb2.Duration(seconds=min(interval_s, 4)),
                )
                created = monitors.CreateMonitor(mpb.CreateMonitorRequest(monitor=monitor), metadata=key, timeout=10)
                fleet.monitors.append(created.monitor.id)

            # The default rule ("a monitor is down", to the default channels), made once the alert service hears
            # of the user's first monitor, would alert besides ours (and count against the rule quota).
            def default_rule() -> list[str]:
                listed = alerts.ListAlertRules(apb.ListAlertRulesRequest(), metadata=key, timeout=10).alert_rules
                return [rule.id for rule in listed if rule.is_default]

            for rule_id in eventually(default_rule, 30, what="the default rule made"):
                alerts.DeleteAlertRule(apb.DeleteAlertRuleRequest(id=rule_id), metadata=key, timeout=10)
            failed = common_pb2.ThresholdCondition(
                field="is_up",
                aggregation=common_pb2.AGGREGATION_LAST,
                operator=common_pb2.COMPARISON_OPERATOR_LESS_THAN,
                value=1,
            )
            fleet.rules = fleet.add_rules(f"{name} failed", common_pb2.AlertCondition(threshold=failed))
        return fleet

    def add_rules(self, name: str, condition: common_pb2.AlertCondition) -> list[str]:
        """One more rule per monitor, on ``condition``, to the fleet's channel; their ids."""
        made = []
        with grpc.insecure_channel(self.stack.address("alert")) as channel:
            alerts = alert_service_pb2_grpc.AlertServiceStub(channel)
            for number, monitor_id in enumerate(self.monitors):
                rule = apb.AlertRule(
                    display_name=f"{name} {number}",
                    monitor_id=monitor_id,
                    condition=condition,
                    severity=common_pb2.SEVERITY_WARNING,
                    channel_ids=[self.channel_id],
                )
                reply = alerts.CreateAlertRule(
                    apb.CreateAlertRuleRequest(alert_rule=rule), metadata=self.key, timeout=10
                )
                made.append(reply.alert_rule.id)
        return made

    def alerts(self, timeout_s: float = 10) -> list[apb.Alert]:
        """Every alert of the user's (all pages)."""
        found: list[apb.Alert] = []
        token = ""
        with grpc.insecure_channel(self.stack.address("alert")) as channel:
            stub = alert_service_pb2_grpc.AlertServiceStub(channel)
            while True:
                page = stub.ListAlerts(
                    apb.ListAlertsRequest(page_size=1000, page_token=token), metadata=self.key, timeout=timeout_s
                )
                found += page.alerts
                token = page.next_page_token
                if not token:
                    return found


class StreamReader(Generic[M]):
    """Reads a server stream on a thread into :attr:`items` (arrival, as Unix time, and message), after
    ``stall_s`` of not reading at all. :meth:`close` cancels it."""

    def __init__(self, call: Iterator[M], stall_s: float = 0.0) -> None:
        self.items: list[tuple[float, M]] = []
        self.ended: BaseException | None = None
        self._call = call
        self._stall_s = stall_s
        self._reading = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        time.sleep(self._stall_s)
        self._reading.set()
        try:
            for message in self._call:
                self.items.append((time.time(), message))
        except grpc.RpcError as error:
            self.ended = error

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call.cancel()  # type: ignore[attr-defined]
        self._thread.join(timeout=10)


class RecordedResults:
    """The results the monitor service says it recorded (WatchMonitorEvents with include_results, as the alert
    service reads them), counted per monitor with the moment each arrived: each had its sample accepted by the
    time-series store, so each must reach it."""

    def __init__(self, stack: Stack) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self._channel = grpc.insecure_channel(stack.address("monitor"))
        stub = monitor_service_pb2_grpc.MonitorServiceStub(self._channel)
        self._call = stub.WatchMonitorEvents(
            mpb.WatchMonitorEventsRequest(include_results=True), metadata=auth(stack.role_token("alert"))
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # the service going away ends the stream
            for message in self._call:
                now = time.time()
                self.arrivals += [(now, result.monitor_id) for result in message.results]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for _, monitor_id in self.arrivals:
            found[monitor_id] = found.get(monitor_id, 0) + 1
        return found

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=10)
        self._channel.close()


def influx_counts(url: str, database: str, where: str = "") -> dict[str, int]:
    """Samples per monitor in InfluxDB's raw retention policy (those matching ``where``, when given)."""
    condition = f" WHERE {where}" if where else ""
    q = f'SELECT count(is_up) FROM "{database}"."monitors_raw"."check"{condition} GROUP BY monitor'
    with urllib.request.urlopen(f"{url}/query?{urllib.parse.urlencode({'q': q})}", timeout=10) as reply:
        result = json.loads(reply.read())["results"][0]
    return {series["tags"]["monitor"]: int(series["values"][0][1]) for series in result.get("series", [])}
