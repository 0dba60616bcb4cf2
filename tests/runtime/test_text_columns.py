"""Text columns behave alike on both stores. MySQL's usual collations ignore case, accents and some invisible
characters, which on MariaDB merged look-alike e-mail addresses into one account and two secrets whose names
differ in case into one row; and its TEXT holds 64 KiB, less than validation accepts. SQLite compares exactly
and has no such limit; the migrations make MySQL do the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.external import MariaDBServer
from harness.monitor_service import open_monitor_domain
from service_runtime.auth import Principal
from service_runtime.database import MYSQL_COLLATION, Database, create_sync_engine, migrate, open_database
from service_runtime.secretbox import SecretBox, new_master_key, parse_master_keys
from services.alert_svc import server as alert_server
from services.monitor_svc import server as monitor_server
from services.monitor_svc.accounts.accounts import Accounts, normalise_email
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.domain import MAX_BODY, MAX_HEADERS, MAX_HEADERS_BYTES, MonitorDraft, WebsiteSpec
from services.monitor_svc.user_secrets import UserSecrets
from services.notify_svc import server as notify_server
from services.notify_svc.domain import ChannelDraft, WebhookConfig, validate_channel
from services.notify_svc.notifications import CHANNEL_CHECKS
from services.notify_svc.store import ChannelStore

SERVICES = [monitor_server, notify_server, alert_server]
LOOK_ALIKES = ["josé@example.com", "JOSE@example.com", "\uff4a\uff4f\uff53\uff45@example.com", "jose\u200b@example.com"]


def test_every_text_column_of_every_service_is_exact_and_large_on_mariadb(mariadb: MariaDBServer) -> None:
    """Also holds future tables to it: a migration creating one converts it (use_exact_text_comparison) and
    widens its TEXT and BLOB columns (use_large_text_columns)."""
    url = mariadb.create_database("exact_text_schema")  # created with utf8mb4_unicode_ci, as users create theirs
    for service in SERVICES:
        migrate(url, service.MIGRATIONS, service.VERSION_TABLE)
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            columns = connection.execute(
                sa.text(
                    "SELECT table_name, column_name, data_type, collation_name FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND table_name NOT LIKE 'alembic_version%'"
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
    assert len({column.table_name for column in columns}) >= 10
    inexact = [f"{c.table_name}.{c.column_name}" for c in columns if c.collation_name not in (None, MYSQL_COLLATION)]
    assert not inexact
    narrow = [
        f"{c.table_name}.{c.column_name}" for c in columns if c.data_type in ("tinytext", "text", "tinyblob", "blob")
    ]
    assert not narrow, "at most 64 KiB on MySQL"
    assert ("api_keys", "users") in foreign_keys, "the conversion must put back the foreign keys it drops"


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


async def test_a_monitor_spec_at_the_validation_limits_is_stored(database_url: str, tmp_path: Path) -> None:
    """A 64 KiB body and 50 headers of 16 KiB together pass validation; on MariaDB they overflowed TEXT (INTERNAL)."""
    async with open_monitor_domain(database_url, tmp_path, email="big@example.com") as domain:
        headers = {f"x-h{i:02d}": "v" * (MAX_HEADERS_BYTES // MAX_HEADERS - 5) for i in range(MAX_HEADERS)}
        spec = WebsiteSpec("https://example.com/", method="POST", body="x" * MAX_BODY, headers=headers)
        monitor = await domain.monitors.create(domain.caller, MonitorDraft(spec=spec))
        assert (await domain.monitors.get(domain.caller, monitor.id)).spec == spec


async def test_a_webhook_at_the_validation_limits_is_stored(database_url: str) -> None:
    """20 headers of 4 KiB pass validation; sealed, they overflowed MariaDB's TEXT (INTERNAL)."""
    database = await open_database(database_url, notify_server.MIGRATIONS, notify_server.VERSION_TABLE)
    try:
        store = ChannelStore(database, SecretBox(parse_master_keys(new_master_key())))
        headers = {f"X-H{i}": "v" * 4096 for i in range(20)}
        draft = ChannelDraft(config=WebhookConfig("https://hooks.example.com/x", headers=headers))
        channel = await store.create_channel("usr_a", validate_channel(draft, CHANNEL_CHECKS))
        stored = await store.get_channel("usr_a", channel.id)
        assert isinstance(stored.config, WebhookConfig)
        assert stored.config.headers == headers
    finally:
        await database.close()
