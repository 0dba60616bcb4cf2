"""Concurrent changes to one monitor on both stores: none undoes another, in the database or in the assignment
hub that tells runners what to check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service_runtime.auth import Principal
from service_runtime.database import open_database
from service_runtime.errors import NotFound
from service_runtime.secretbox import SecretBox, new_master_key, parse_master_keys
from service_runtime.timeseries import SqliteSampleStore
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.assignments import AssignmentHub
from services.monitor_svc.checks import Checker
from services.monitor_svc.domain import Monitor, MonitorDraft, WebsiteSpec
from services.monitor_svc.monitors import Monitors
from services.monitor_svc.schema import MIGRATIONS, VERSION_TABLE
from services.monitor_svc.store import MonitorStore
from services.monitor_svc.user_secrets import UserSecrets


@dataclass
class Service:
    monitors: Monitors
    hub: AssignmentHub
    caller: Principal
    monitor: Monitor


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    database = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    store = MonitorStore(database)
    secrets = UserSecrets(database, SecretBox(parse_master_keys(new_master_key())), store.referring_to_secret)
    monitors = Monitors(store, SqliteSampleStore(tmp_path / "samples.sqlite3"), Checker(), secrets)
    hub = AssignmentHub(monitors.all_monitors, monitors.record_many)
    monitors.change_listeners.append(hub.monitor_changed)
    user = await AccountStore(database).ensure_user("p@example.com")
    caller = Principal(user.id, user.email, "key_1")
    monitor = await monitors.create(caller, MonitorDraft(spec=WebsiteSpec("https://example.com/")))
    yield Service(monitors, hub, caller, monitor)
    await database.close()


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
