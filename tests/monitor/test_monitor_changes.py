"""Concurrent changes to one monitor on both stores: none undoes another, in the database or in the assignment
hub that tells runners what to check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.monitor_service import open_monitor_domain
from service_runtime.auth import Principal
from service_runtime.errors import NotFound
from services.monitor_svc.assignments import AssignmentHub
from services.monitor_svc.domain import Monitor, MonitorDraft, WebsiteSpec
from services.monitor_svc.monitors import Monitors


@dataclass
class Service:
    monitors: Monitors
    hub: AssignmentHub
    caller: Principal
    monitor: Monitor


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async with open_monitor_domain(database_url, tmp_path, email="p@example.com") as domain:
        hub = AssignmentHub(domain.monitors.all_monitors, domain.monitors.record_many)
        domain.monitors.change_listeners.append(hub.monitor_changed)
        monitor = await domain.monitors.create(domain.caller, MonitorDraft(spec=WebsiteSpec("https://example.com/")))
        yield Service(domain.monitors, hub, domain.caller, monitor)


async def test_an_update_never_undoes_a_pause_made_at_the_same_time(service: Service) -> None:
    """Failed before on MariaDB: the update wrote back the whole row it had read, paused included."""
    monitors, caller, monitor_id = service.monitors, service.caller, service.monitor.id
    for round_ in range(20):
        await monitors.set_paused(caller, monitor_id, False)
        renamed = MonitorDraft(spec=None, display_name=f"renamed {round_}")
        await asyncio.gather(
            monitors.update(caller, monitor_id, renamed, ["display_name"]),
            monitors.set_paused(caller, monitor_id, True),
        )
        stored = await monitors.get(caller, monitor_id)
        assert (stored.paused, stored.display_name) == (True, f"renamed {round_}")
        assert service.hub._monitors[monitor_id].paused, "the hub would have runners check a paused monitor"


async def test_an_update_racing_a_delete_does_not_bring_the_monitor_back_to_runners(service: Service) -> None:
    monitors, caller, monitor_id = service.monitors, service.caller, service.monitor.id
    outcomes = await asyncio.gather(
        monitors.update(caller, monitor_id, MonitorDraft(spec=None, display_name="late"), ["display_name"]),
        monitors.delete(caller, monitor_id),
        return_exceptions=True,
    )
    assert all(outcome is None or isinstance(outcome, (Monitor, NotFound)) for outcome in outcomes)
    with pytest.raises(NotFound):
        await monitors.get(caller, monitor_id)
    assert monitor_id not in service.hub._monitors
