"""How check results become a monitor's state: retries before DOWN, and quorum across locations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from harness.clock import midnight_days_ago
from services.monitor_svc.domain import (
    CheckResult,
    Monitor,
    MonitorState,
    MonitorStatus,
    WebsiteSpec,
    next_status,
)

T0 = midnight_days_ago(1) + timedelta(hours=12)


def monitor(locations: tuple[str, ...] = (), quorum: int = 0, retries: int = 0) -> Monitor:
    return Monitor(
        id="mon_1",
        owner_id="usr_1",
        display_name="example",
        spec=WebsiteSpec(url="https://example.com"),
        interval=timedelta(seconds=60),
        timeout=timedelta(seconds=10),
        retries=retries,
        locations=locations,
        quorum=quorum,
        paused=False,
        labels={},
        heartbeat_token="t",
        create_time=T0,
        update_time=T0,
    )


def feed(m: Monitor, *results: tuple[str, bool]) -> list[MonitorStatus]:
    """Statuses after each (location, is_up) result in turn, one second apart."""
    status = MonitorStatus(m.id, MonitorState.PENDING)
    seen = []
    for i, (location, is_up) in enumerate(results):
        result = CheckResult(m.id, T0 + timedelta(seconds=i), is_up, timedelta(milliseconds=5), location=location)
        status = next_status(m, status, result)
        seen.append(status)
    return seen


def states(statuses: list[MonitorStatus]) -> list[MonitorState]:
    return [s.state for s in statuses]


UP, DOWN, PENDING = MonitorState.UP, MonitorState.DOWN, MonitorState.PENDING


def test_one_location_goes_down_after_its_retries_and_up_at_once() -> None:
    statuses = feed(monitor(retries=2), ("", True), ("", False), ("", False), ("", False), ("", True))
    assert states(statuses) == [UP, PENDING, PENDING, DOWN, UP]
    assert [s.consecutive_failures for s in statuses] == [0, 1, 2, 3, 0]
    assert statuses[3].state_change_time == T0 + timedelta(seconds=3)


def test_one_of_three_locations_failing_is_not_down() -> None:
    m = monitor(("east", "west", "south"))  # quorum 0 = majority = 2
    statuses = feed(m, ("east", True), ("west", True), ("south", False), ("south", False))
    assert states(statuses) == [UP, UP, UP, UP]
    assert {loc: e.result.is_up for loc, e in statuses[-1].location_results.items()} == {
        "east": True,
        "west": True,
        "south": False,
    }


def test_a_majority_of_locations_failing_is_down_and_one_recovering_brings_it_back() -> None:
    m = monitor(("east", "west", "south"))
    statuses = feed(m, ("east", True), ("west", False), ("south", False), ("west", True))
    assert states(statuses) == [UP, UP, DOWN, UP]


@pytest.mark.parametrize(("quorum", "expected"), [(1, DOWN), (2, UP), (3, UP)])
def test_an_explicit_quorum_decides(quorum: int, expected: MonitorState) -> None:
    m = monitor(("east", "west", "south"), quorum=quorum)
    assert feed(m, ("east", True), ("west", False))[-1].state == expected


def test_retries_apply_per_location_before_it_counts_as_failing() -> None:
    m = monitor(("east", "west"), quorum=2, retries=1)
    statuses = feed(m, ("east", False), ("west", False), ("east", False), ("west", False))
    assert states(statuses) == [PENDING, PENDING, PENDING, DOWN]


def test_a_location_the_monitor_no_longer_asks_for_has_no_say() -> None:
    m = monitor(("east", "west"), quorum=1)
    statuses = feed(m, ("north", False), ("east", True))
    assert states(statuses) == [PENDING, UP]
    assert set(statuses[-1].location_results) == {"east"}


def feed_at(m: Monitor, *results: tuple[int, str, bool]) -> list[MonitorStatus]:
    """Statuses after each (seconds after T0, location, is_up) result in turn."""
    status = MonitorStatus(m.id, MonitorState.PENDING)
    seen = []
    for seconds, location, is_up in results:
        result = CheckResult(m.id, T0 + timedelta(seconds=seconds), is_up, timedelta(milliseconds=5), location=location)
        status = next_status(m, status, result)
        seen.append(status)
    return seen


def test_a_location_with_no_runner_does_not_keep_the_others_failures_from_counting() -> None:
    """Majority of two is two: with nothing ever from west, east's failures never made it DOWN (failed before)."""
    m = monitor(("east", "west"))
    statuses = feed_at(m, (0, "east", True), (60, "east", False), (120, "east", False), (180, "east", False))
    # Within three intervals of the monitor's creation, west may still send its first result: no DOWN yet.
    assert states(statuses) == [UP, PENDING, PENDING, DOWN]


def test_a_location_whose_runners_went_quiet_no_longer_counts() -> None:
    m = monitor(("east", "west", "south"))  # majority: 2
    statuses = feed_at(m, (0, "west", True), (0, "south", True), (10, "east", False), (400, "east", False))
    # At 400 s west and south have sent nothing for over three intervals: east alone is the quorum it can get.
    assert states(statuses) == [UP, UP, UP, DOWN]


def test_locations_still_reporting_keep_their_say() -> None:
    m = monitor(("east", "west"))
    statuses = feed_at(m, *[(t, "west", True) for t in (0, 100, 200, 300)], (310, "east", False), (320, "east", False))
    assert states(statuses)[-2:] == [UP, UP]  # west saw it up 20 s before: one location's trouble pages nobody


def test_an_explicit_quorum_stands_even_with_a_location_absent() -> None:
    m = monitor(("east", "west"), quorum=2)
    statuses = feed_at(m, (0, "east", True), (300, "east", False), (360, "east", False))
    assert states(statuses) == [UP, PENDING, PENDING]
