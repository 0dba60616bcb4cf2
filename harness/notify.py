"""Fixtures of the notification service's delivery tests: its database on both stores, its channel store and
delivery queue, the provider receivers (real HTTPS servers standing in for Slack, Discord, PagerDuty ...) and an
HTTP client that trusts them.

A test module takes them with ``from harness.notify import channels, client, database, queue, receivers``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from harness.receivers import ProviderReceivers
from service_runtime.database import Database, open_database
from service_runtime.egress import EgressConfig, EgressPolicy
from service_runtime.http_client import HttpClient
from service_runtime.secretbox import SecretBox
from services.notify_svc.delivery_queue import DeliveryQueue
from services.notify_svc.senders.base import sender_client
from services.notify_svc.server import MIGRATIONS, VERSION_TABLE
from services.notify_svc.store import ChannelStore


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    yield db
    await db.close()


@pytest.fixture
def channels(database: Database) -> ChannelStore:
    return ChannelStore(database, SecretBox([os.urandom(32)]))


@pytest.fixture
def queue(database: Database) -> DeliveryQueue:
    return DeliveryQueue(database, SecretBox([os.urandom(32)]))


@pytest.fixture
async def client(receivers: ProviderReceivers) -> AsyncIterator[HttpClient]:
    found = sender_client(EgressConfig(EgressPolicy.PRIVATE_ALLOWED, ca_file=str(receivers.ca_file)))
    yield found
    await found.aclose()
