"""Silences and maintenance windows as plain rules: when they mute, and when they next begin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness.clock import midnight_days_ago
from service_runtime.errors import InvalidArgument
from services.alert_svc.domain import Silence, SilenceDraft, check_comment, validate_silence

DAY = midnight_days_ago(3)


def window(cron: str = "", duration: timedelta | None = None, **changes: object) -> Silence:
    fields: dict[str, object] = {
        "id": "sil_1",
        "owner_id": "usr_a",
        "monitor_id": "",
        "rule_id": "",
        "selector": {},
        "start_time": DAY - timedelta(days=30),
        "end_time": None,
        "comment": "",
        "cron_schedule": cron,
        "duration": duration,
        "time_zone": "",
        "create_time": DAY - timedelta(days=30),
        **changes,
    }
    return Silence(**fields)  # type: ignore[arg-type]


def test_a_nightly_window_mutes_from_its_start_for_its_duration() -> None:
    nightly = window("0 22 * * *", timedelta(hours=1))
    assert not nightly.active_at(DAY + timedelta(hours=21, minutes=59))
    assert nightly.active_at(DAY + timedelta(hours=22))  # the very start
    assert nightly.active_at(DAY + timedelta(hours=22, minutes=59, seconds=59))
    assert not nightly.active_at(DAY + timedelta(hours=23))
    assert nightly.next_start(DAY + timedelta(hours=12)) == DAY + timedelta(hours=22)
    assert nightly.next_start(DAY + timedelta(hours=22, minutes=30)) == DAY + timedelta(days=1, hours=22)


def test_a_window_runs_in_its_own_time_zone() -> None:
    paris = window("0 22 * * *", timedelta(hours=1), time_zone="Europe/Paris")
    # 22:00 in Paris is 21:00 UTC in winter and 20:00 UTC in summer.
    winter = datetime(2001, 1, 15, 21, 30, tzinfo=UTC)
    summer = datetime(2001, 7, 15, 20, 30, tzinfo=UTC)
    for moment in (winter, summer):
        begun = window(
            "0 22 * * *", timedelta(hours=1), time_zone="Europe/Paris", start_time=moment - timedelta(days=9)
        )
        assert begun.active_at(moment)
    utc = window("0 22 * * *", timedelta(hours=1), start_time=winter - timedelta(days=9))
    assert not utc.active_at(winter)
    assert paris.time_zone == "Europe/Paris"


def test_an_every_minute_window_with_a_long_duration_is_one_step_back() -> None:
    """'* * * * *' for 7 days: always on once begun, and answered from the latest occurrence alone."""
    always = window("* * * * *", timedelta(days=7))
    assert all(always.active_at(DAY + timedelta(minutes=m, seconds=17)) for m in range(0, 10_000, 997))


def test_one_off_silences_and_the_bounds_of_a_recurring_one() -> None:
    later = window(start_time=DAY + timedelta(hours=1), end_time=DAY + timedelta(hours=2))
    assert not later.active_at(DAY)
    assert later.active_at(DAY + timedelta(hours=1))
    assert not later.active_at(DAY + timedelta(hours=2))
    assert later.next_start(DAY) == DAY + timedelta(hours=1)
    assert later.next_start(DAY + timedelta(hours=1, minutes=1)) is None
    ending = window("0 22 * * *", timedelta(hours=1), end_time=DAY + timedelta(days=1))
    assert ending.next_start(DAY + timedelta(hours=23)) is None  # its next night is past its end


def test_a_huge_cron_or_comment_is_refused_naming_the_field() -> None:
    """A megabyte of cron (every minute listed thousands of times) had held the alert service for seconds for
    everyone; a 3,000,000-character acknowledgement comment had been stored."""
    huge = ",".join(str(i % 60) for i in range(400_000)) + " * * * *"
    draft = SilenceDraft(cron_schedule=huge, duration=timedelta(minutes=5))
    with pytest.raises(InvalidArgument) as refused:
        validate_silence(draft, DAY)
    assert [v.field for v in refused.value.violations] == ["silence.cron_schedule"]
    assert check_comment("fixed the disk") == "fixed the disk"
    with pytest.raises(InvalidArgument) as long_comment:
        check_comment("x" * 3_000_000)
    assert [v.field for v in long_comment.value.violations] == ["comment"]
