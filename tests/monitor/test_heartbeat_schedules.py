"""Heartbeats as Healthchecks.io has them: cron schedules read in a time zone, periods and grace periods over a
day, /start pings that measure a run, exit-status pings, and the latest pings kept with their bodies. On both
databases (a SQLite file and the harness's MariaDB), with the real stores; the clock is the sweep's ``now`` and
the ping limiter's own, so nothing waits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness.monitor_service import open_monitor_domain
from service_runtime.auth import Principal
from service_runtime.database import Database, open_database
from service_runtime.errors import InvalidArgument
from service_runtime.timeseries import SeriesKey, SqliteSampleStore
from services.monitor_svc import server as monitor_server
from services.monitor_svc.domain import (
    HeartbeatSpec,
    Limits,
    Monitor,
    MonitorDraft,
    MonitorState,
    MonitorStatus,
    Ping,
    PingKind,
    WebsiteSpec,
    next_ping_due,
    validate,
)
from services.monitor_svc.heartbeats import Heartbeats, PingLimiter, PingOutcome
from services.monitor_svc.monitors import Monitors
from services.monitor_svc.ping_log import SqlPingLog
from services.monitor_svc.store import MonitorStore

PARIS = ZoneInfo("Europe/Paris")


@dataclass
class Rig:
    heartbeats: Heartbeats
    monitors: Monitors
    timeseries: SqliteSampleStore
    caller: Principal
    clock: list[float]

    async def create(self, spec: HeartbeatSpec, interval: timedelta = timedelta(minutes=1)) -> Monitor:
        return await self.monitors.create(self.caller, MonitorDraft(spec=spec, interval=interval))

    async def ping(self, monitor: Monitor, ping: Ping) -> PingOutcome:
        self.clock[0] += 1.0  # a second after the last: the limiter takes it
        return await self.heartbeats.ping(monitor.heartbeat_token, ping)

    async def state(self, monitor: Monitor) -> tuple[MonitorState, str]:
        status = await self.monitors.status(self.caller, monitor.id)
        return status.state, status.last_result.message if status.last_result else ""


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url, monitor_server.MIGRATIONS, monitor_server.VERSION_TABLE)
    yield database
    await database.close()


@pytest.fixture
async def rig(database_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_monitor_domain(database_url, tmp_path, email="cron@example.com") as domain:
        clock = [1000.0]
        heartbeats = Heartbeats(
            domain.store, domain.monitors, PingLimiter(lambda: clock[0]), SqlPingLog(domain.database)
        )
        assert isinstance(domain.timeseries, SqliteSampleStore)
        yield Rig(heartbeats, domain.monitors, domain.timeseries, domain.caller, clock)


def next_local(after: datetime, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    """The first hour:minute wall-clock time in ``zone`` after ``after``, worked out without cron."""
    local = after.astimezone(zone)
    candidate = datetime.combine(local.date(), datetime.min.time().replace(hour=hour, minute=minute), zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), candidate.timetz())
    return candidate.astimezone(UTC)


def test_a_cron_schedule_is_read_in_its_time_zone_across_a_daylight_saving_change() -> None:
    nightly = HeartbeatSpec(cron="0 3 * * *", time_zone="Europe/Paris")
    day = timedelta(days=1)
    # Winter: 03:00 in Paris is 02:00 UTC. The night clocks go forward (31 March 2041): 01:00 UTC. (A year far
    # from today, as tests/system/test_calendar_free.py asks; zoneinfo carries today's rules forward.)
    assert next_ping_due(nightly, day, datetime(2041, 1, 10, 12, tzinfo=UTC)) == datetime(2041, 1, 11, 2, tzinfo=UTC)
    assert next_ping_due(nightly, day, datetime(2041, 3, 30, 12, tzinfo=UTC)) == datetime(2041, 3, 31, 1, tzinfo=UTC)
    assert next_ping_due(HeartbeatSpec(cron="0 3 * * *"), day, datetime(2041, 3, 30, 12, tzinfo=UTC)) == datetime(
        2041, 3, 31, 3, tzinfo=UTC
    )  # no zone: UTC
    weekly = HeartbeatSpec(cron="30 6 * * 1", time_zone="America/New_York")  # Mondays 06:30 in New York
    # From Wednesday 3 July 2041 to Monday the 8th, 06:30 EDT.
    assert next_ping_due(weekly, day, datetime(2041, 7, 3, tzinfo=UTC)) == datetime(2041, 7, 8, 10, 30, tzinfo=UTC)
    # Without cron: the interval after the last ping.
    assert next_ping_due(HeartbeatSpec(), day, datetime(2041, 7, 3, tzinfo=UTC)) == datetime(2041, 7, 4, tzinfo=UTC)


HEARTBEAT = "monitor.spec.heartbeat"
NIGHTLY = "0 3 * * *"


@pytest.mark.parametrize(
    ("draft", "field", "says"),
    [
        (MonitorDraft(spec=HeartbeatSpec(cron="0 3 * *")), f"{HEARTBEAT}.cron", "five fields"),
        (MonitorDraft(spec=HeartbeatSpec(cron="61 * * * *")), f"{HEARTBEAT}.cron", "five fields"),
        (MonitorDraft(spec=HeartbeatSpec(cron=NIGHTLY, time_zone="Mars/Olympus")), f"{HEARTBEAT}.time_zone", "IANA"),
        (MonitorDraft(spec=HeartbeatSpec(cron=NIGHTLY, time_zone="../../etc/pwd")), f"{HEARTBEAT}.time_zone", "IANA"),
        (MonitorDraft(spec=HeartbeatSpec(time_zone="Europe/Paris")), f"{HEARTBEAT}.time_zone", "only used with cron"),
        (MonitorDraft(spec=HeartbeatSpec(timedelta(days=366))), f"{HEARTBEAT}.grace_period", "365 days"),
        (MonitorDraft(spec=HeartbeatSpec(), interval=timedelta(days=366)), "monitor.interval", "365 days"),
        (MonitorDraft(spec=WebsiteSpec("https://example.com/"), interval=timedelta(days=2)), "monitor.interval", "24h"),
    ],
)  # fmt: skip
def test_schedules_are_checked_and_the_error_names_the_field(draft: MonitorDraft, field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate(draft, Limits())
    [violation] = caught.value.violations
    assert (violation.field, says in violation.description) == (field, True), violation


def test_a_heartbeat_may_expect_a_ping_a_week_with_two_days_of_grace() -> None:
    """The 24 h limit of checks we run does not bound how often a job of the user's runs."""
    weekly = validate(MonitorDraft(spec=HeartbeatSpec(timedelta(days=2)), interval=timedelta(days=7)), Limits())
    assert (weekly.interval, weekly.spec) == (timedelta(days=7), HeartbeatSpec(timedelta(days=2)))
    yearly = validate(MonitorDraft(spec=HeartbeatSpec(cron="0 0 1 1 *", time_zone="Asia/Tokyo")), Limits())
    assert yearly.spec == HeartbeatSpec(cron="0 0 1 1 *", time_zone="Asia/Tokyo")


async def test_a_cron_heartbeat_is_down_only_after_its_next_scheduled_time_plus_grace(rig: Rig) -> None:
    monitor = await rig.create(HeartbeatSpec(timedelta(minutes=30), cron="0 3 * * *", time_zone="Europe/Paris"))
    assert await rig.ping(monitor, Ping()) is PingOutcome.RECORDED
    pinged = (await rig.monitors.status(rig.caller, monitor.id)).last_check_time
    assert pinged is not None
    due = next_local(pinged, 3, 0, PARIS)
    # The monitor's interval (1 minute) no longer says when: UP until 03:00 in Paris plus the grace period.
    assert await rig.heartbeats.sweep(now=due + timedelta(minutes=29)) == 0
    assert (await rig.state(monitor))[0] is MonitorState.UP
    assert await rig.heartbeats.sweep(now=due + timedelta(minutes=31)) == 1
    state, message = await rig.state(monitor)
    assert state is MonitorState.DOWN
    assert f"due {due:%Y-%m-%d %H:%M:%S} UTC by cron '0 3 * * *' in Europe/Paris + grace 30m" in message


async def test_a_start_then_an_exit_status_measures_the_run_and_keeps_what_the_job_said(rig: Rig) -> None:
    monitor = await rig.create(HeartbeatSpec())
    assert await rig.heartbeats.ping(monitor.heartbeat_token, Ping(PingKind.START)) is PingOutcome.RECORDED
    # Within the same second: a start and the run's end are limited apart, so a short job is heard.
    done = Ping(PingKind.SUCCESS, exit_status=0, body="backed up 12 GB", method="POST", user_agent="curl/8.5")
    assert await rig.heartbeats.ping(monitor.heartbeat_token, done) is PingOutcome.RECORDED
    assert (await rig.state(monitor))[0] is MonitorState.UP
    assert await rig.ping(monitor, Ping(PingKind.FAIL, exit_status=3, body="disk full\n")) is PingOutcome.RECORDED
    state, message = await rig.state(monitor)
    assert (state, message) == (MonitorState.DOWN, "exit status 3: disk full")

    pings, token = await rig.heartbeats.recent_pings(rig.caller, monitor.id, 0, "")
    assert token == ""
    assert [(p.ping.kind, p.ping.exit_status, p.ping.body) for p in pings] == [
        (PingKind.FAIL, 3, "disk full\n"),
        (PingKind.SUCCESS, 0, "backed up 12 GB"),
        (PingKind.START, None, ""),
    ]
    assert (pings[1].ping.method, pings[1].ping.user_agent) == ("POST", "curl/8.5")
    assert pings[1].run_time is not None
    assert pings[1].run_time == pings[1].time - pings[2].time
    assert pings[0].run_time is None  # no start before it
    # The run time is a sample field too, for charts and alert rules.
    points = await rig.timeseries.points(
        SeriesKey(rig.caller.user_id, monitor.id), "run_time_ms", pings[2].time, pings[0].time + timedelta(1), 10
    )
    # In milliseconds to the microsecond (2014.394, not 2014.3939999999998).
    assert [p.value for p in points] == [round(pings[1].run_time.total_seconds() * 1000, 3)]
    assert len(repr(points[0].value).partition(".")[2]) <= 3


async def test_a_job_started_but_not_finished_within_its_grace_period_is_down(rig: Rig) -> None:
    monitor = await rig.create(HeartbeatSpec(timedelta(minutes=10)), interval=timedelta(days=1))
    await rig.ping(monitor, Ping())
    await rig.ping(monitor, Ping(PingKind.START))
    [start, _] = (await rig.heartbeats.recent_pings(rig.caller, monitor.id, 0, ""))[0]
    assert await rig.heartbeats.sweep(now=start.time + timedelta(minutes=9)) == 0
    assert await rig.heartbeats.sweep(now=start.time + timedelta(minutes=10)) == 1
    state, message = await rig.state(monitor)
    assert state is MonitorState.DOWN
    assert message == f"started at {start.time:%Y-%m-%d %H:%M:%S} UTC and not finished within the grace period of 10m"


async def test_only_the_latest_ten_pings_are_kept_and_read_in_pages(rig: Rig) -> None:
    monitor = await rig.create(HeartbeatSpec())
    for i in range(13):
        await rig.ping(monitor, Ping(body=f"run {i}"))
    first, token = await rig.heartbeats.recent_pings(rig.caller, monitor.id, 4, "")
    second, token2 = await rig.heartbeats.recent_pings(rig.caller, monitor.id, 4, token)
    third, token3 = await rig.heartbeats.recent_pings(rig.caller, monitor.id, 4, token2)
    assert [p.ping.body for p in first + second + third] == [f"run {i}" for i in range(12, 2, -1)]
    assert (bool(token), bool(token2), token3) == (True, True, "")
    with pytest.raises(InvalidArgument) as caught:
        await rig.heartbeats.recent_pings(rig.caller, monitor.id, 4, "not-a-token")
    assert caught.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument) as caught:
        await rig.heartbeats.recent_pings(rig.caller, monitor.id, -1, "")
    assert caught.value.violations[0].field == "page_size"


async def test_a_run_started_before_a_restart_is_still_measured_and_still_watched(rig: Rig, database: Database) -> None:
    """A new Heartbeats (the monitor service restarted) takes up the starts the ping log holds."""
    timed = await rig.create(HeartbeatSpec(timedelta(minutes=10)), interval=timedelta(days=1))
    stuck = await rig.create(HeartbeatSpec(timedelta(minutes=10)), interval=timedelta(days=1))
    done = await rig.create(HeartbeatSpec(timedelta(minutes=10)), interval=timedelta(days=1))
    for monitor in (timed, stuck, done):
        await rig.heartbeats.ping(monitor.heartbeat_token, Ping(PingKind.START))
    await rig.ping(done, Ping())  # finished before the restart: nothing to take up

    store = MonitorStore(database)
    restarted = Heartbeats(store, rig.monitors, PingLimiter(lambda: rig.clock[0]), SqlPingLog(database))
    await restarted.restore_starts()
    rig.clock[0] += 1.0
    assert await restarted.ping(timed.heartbeat_token, Ping(exit_status=0)) is PingOutcome.RECORDED
    [end, start] = (await restarted.recent_pings(rig.caller, timed.id, 2, ""))[0]
    assert end.run_time == end.time - start.time
    assert await restarted.sweep(now=start.time + timedelta(minutes=10, seconds=1)) == 1  # the stuck one only
    assert (await rig.state(stuck))[1].startswith("started at ")
    assert [(await rig.state(m))[0] for m in (timed, done)] == [MonitorState.UP, MonitorState.UP]


class ReadBefore(MonitorStore):
    """The store as another replica's sweep read it: the heartbeat monitors as they were before a first replica
    recorded anything (both sweeps read, then both record)."""

    def __init__(self, database: Database, snapshot: list[tuple[Monitor, MonitorStatus]]) -> None:
        super().__init__(database)
        self._snapshot = snapshot

    async def active_heartbeats(self) -> list[tuple[Monitor, MonitorStatus]]:
        return self._snapshot


async def test_two_replicas_sweeping_one_overdue_heartbeat_at_once_record_one_down(
    rig: Rig, database: Database
) -> None:
    """Every monitor-service replica sweeps heartbeat deadlines. Two that read an overdue monitor at once record
    one DOWN between them: a sweep records it at the deadline, not at its own now, so the second's is a repeat
    (it had recorded a second DOWN sample and counted two failures)."""
    monitor = await rig.create(HeartbeatSpec(timedelta(minutes=10)), interval=timedelta(days=1))
    await rig.ping(monitor, Ping())
    pinged = (await rig.monitors.status(rig.caller, monitor.id)).last_check_time
    assert pinged is not None
    deadline = pinged + timedelta(days=1, minutes=10)
    other = Heartbeats(
        ReadBefore(database, await MonitorStore(database).active_heartbeats()),
        rig.monitors,
        PingLimiter(lambda: rig.clock[0]),
        SqlPingLog(database),
        replicated=True,
    )
    assert await rig.heartbeats.sweep(now=deadline + timedelta(seconds=1)) == 1
    await other.sweep(now=deadline + timedelta(seconds=2))
    status = await rig.monitors.status(rig.caller, monitor.id)
    assert (status.state, status.consecutive_failures, status.last_check_time) == (MonitorState.DOWN, 1, deadline)
    points = await rig.timeseries.points(
        SeriesKey(rig.caller.user_id, monitor.id), "is_up", pinged, deadline + timedelta(minutes=1), 10
    )
    assert [p.value for p in points] == [1.0, 0.0]


async def test_a_run_started_through_one_replica_is_measured_when_it_ends_through_another(
    rig: Rig, database: Database
) -> None:
    monitor = await rig.create(HeartbeatSpec(timedelta(minutes=10)), interval=timedelta(days=1))
    other = Heartbeats(
        MonitorStore(database), rig.monitors, PingLimiter(lambda: rig.clock[0]), SqlPingLog(database), replicated=True
    )
    assert await rig.heartbeats.ping(monitor.heartbeat_token, Ping(PingKind.START)) is PingOutcome.RECORDED
    rig.clock[0] += 1.0
    assert await other.ping(monitor.heartbeat_token, Ping(exit_status=0)) is PingOutcome.RECORDED
    [end, start] = (await other.recent_pings(rig.caller, monitor.id, 2, ""))[0]
    assert (start.ping.kind, end.run_time) == (PingKind.START, end.time - start.time)
