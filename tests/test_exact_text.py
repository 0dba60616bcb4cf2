"""Text compares exactly on both stores: MySQL's usual collations ignore case, accents and some invisible
characters, which on MariaDB merged look-alike e-mail addresses into one account and two secrets whose names
differ in case into one row. SQLite compares exactly; the migrations make MySQL do the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service_runtime.auth import Principal
from service_runtime.database import MYSQL_COLLATION, Database, create_sync_engine, migrate, open_database
from service_runtime.secretbox import SecretBox, new_master_key, parse_master_keys
from services.alert_svc import server as alert_server
from services.monitor_svc import server as monitor_server
from services.monitor_svc.accounts import Accounts, normalise_email
from services.monitor_svc.store import AccountStore
from services.monitor_svc.user_secrets import UserSecrets
from services.notify_svc import server as notify_server
from tests.harness.external import MariaDBServer

SERVICES = [monitor_server, notify_server, alert_server]
LOOK_ALIKES = ["josé@example.com", "JOSE@example.com", "\uff4a\uff4f\uff53\uff45@example.com", "jose\u200b@example.com"]


def test_every_text_column_of_every_service_compares_exactly_on_mariadb(mariadb: MariaDBServer) -> None:
    """Also holds future tables to it: a migration creating one must convert it (use_exact_text_comparison)."""
    url = mariadb.create_database("exact_text_schema")  # created with utf8mb4_unicode_ci, as users create theirs
    for service in SERVICES:
        migrate(url, service.MIGRATIONS, service.VERSION_TABLE)
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            columns = connection.execute(
                sa.text(
                    "SELECT table_name, column_name, collation_name FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND collation_name IS NOT NULL"
                    " AND table_name NOT LIKE 'alembic_version%'"
                )
            ).all()
            foreign_keys = set(
                connection.execute(
                    sa.text(
                        "SELECT table_name, referenced_table_name FROM information_schema.referential_constraints"
                        " WHERE constraint_schema = DATABASE()"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert ("api_keys", "users") in foreign_keys, "the conversion must put back the foreign keys it drops"
    assert len({table for table, _, _ in columns}) >= 10
    inexact = [
        f"{table}.{column} ({collation})" for table, column, collation in columns if collation != MYSQL_COLLATION
    ]
    assert not inexact


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url, monitor_server.MIGRATIONS, monitor_server.VERSION_TABLE)
    yield database
    await database.close()


@pytest.mark.parametrize("other", LOOK_ALIKES)
async def test_a_look_alike_address_is_not_another_users_account(database: Database, other: str) -> None:
    accounts = Accounts(AccountStore(database))
    owner = await accounts.ensure_user("jose@example.com")
    stranger = await accounts.ensure_user(other)
    # Addresses are lower-cased, so only the upper-case spelling is the same user.
    assert (stranger.id == owner.id) == (normalise_email(other) == owner.email)
    assert stranger.email == normalise_email(other)


async def test_secret_names_differing_in_case_are_two_secrets(database: Database, tmp_path: Path) -> None:
    user = await AccountStore(database).ensure_user("a@example.com")
    caller = Principal(user.id, user.email, "key_1")

    async def no_references(owner_id: str, name: str) -> list[str]:
        return []

    secrets = UserSecrets(database, SecretBox(parse_master_keys(new_master_key())), no_references)
    await secrets.put(caller, "Token", "first")
    await secrets.put(caller, "TOKEN", "second")
    assert await secrets.names(user.id) == {"Token", "TOKEN"}
    assert await secrets.values(user.id, {"Token", "TOKEN"}) == {"Token": "first", "TOKEN": "second"}
    await secrets.delete(caller, "TOKEN")
    assert await secrets.values(user.id, {"Token"}) == {"Token": "first"}
