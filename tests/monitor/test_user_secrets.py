"""The secrets store on both relational stores, under concurrent writers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service_runtime.auth import Principal
from service_runtime.database import Database, open_database
from service_runtime.secretbox import SecretBox, new_master_key, parse_master_keys
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.schema import MIGRATIONS, VERSION_TABLE
from services.monitor_svc.user_secrets import UserSecrets


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url, MIGRATIONS, VERSION_TABLE)
    yield database
    await database.close()


async def test_concurrent_first_puts_of_a_name_all_succeed_and_one_value_wins(database: Database) -> None:
    """A retried PutSecret, or two replicas: on MariaDB the losing INSERT raised IntegrityError (INTERNAL)."""
    user = await AccountStore(database).ensure_user("a@example.com")
    caller = Principal(user.id, user.email, "key_1")

    async def no_references(owner_id: str, name: str) -> list[str]:
        return []

    secrets = UserSecrets(database, SecretBox(parse_master_keys(new_master_key())), no_references)
    for round_ in range(10):
        name = f"TOKEN_{round_}"
        values = [f"value {i}" for i in range(4)]
        infos = await asyncio.gather(*(secrets.put(caller, name, value) for value in values))
        assert len({info.create_time for info in infos}) == 1, "one secret, created once"
        assert (await secrets.values(user.id, {name}))[name] in values
    assert len(await secrets.names(user.id)) == 10
