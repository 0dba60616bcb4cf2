"""Accounts on both relational stores: migrations, users, API keys, owner scoping, expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from service_runtime.auth import CachingTokenVerifier
from service_runtime.database import Database, create_sync_engine, migrate, utc_now
from service_runtime.errors import InvalidArgument, NotFound, Unauthenticated
from services.monitor_svc.accounts.accounts import Accounts
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.schema import MIGRATIONS, VERSION_TABLE


@pytest.fixture
async def accounts(database_url: str) -> AsyncIterator[Accounts]:
    migrate(database_url, MIGRATIONS, VERSION_TABLE)
    database = Database(database_url)
    yield Accounts(AccountStore(database))
    await database.close()


def test_migrations_create_tables_and_are_idempotent(database_url: str) -> None:
    migrate(database_url, MIGRATIONS, VERSION_TABLE)
    migrate(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_sync_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            version = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
    finally:
        engine.dispose()
    assert {"users", "api_keys", "monitors", "monitor_status", "secrets", "heartbeat_pings", VERSION_TABLE} <= tables
    assert version == ScriptDirectory(str(MIGRATIONS)).get_current_head() == "0010"


async def test_ensure_user_normalises_email_and_is_idempotent(accounts: Accounts) -> None:
    first = await accounts.ensure_user("  Alice@Example.COM ")
    again = await accounts.ensure_user("alice@example.com")
    assert first.id == again.id
    assert first.email == "alice@example.com"
    assert first.id.startswith("usr_")


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b", "a b@example.com", "x" * 250 + "@example.com"])
async def test_invalid_email_is_refused_naming_the_field(accounts: Accounts, email: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await accounts.ensure_user(email)
    assert caught.value.violations[0].field == "email"


async def test_api_key_resolves_to_its_owner_until_deleted(accounts: Accounts) -> None:
    user = await accounts.ensure_user("owner@example.com")
    key, secret = await accounts.create_api_key(user, "ci", None)
    assert secret.startswith("mk_")
    assert key.prefix == secret[:11]
    assert secret[11:] not in key.prefix
    principal = await accounts.verify(secret)
    assert (principal.user_id, principal.email, principal.credential_id) == (user.id, user.email, key.id)
    await accounts.delete_api_key(principal, key.id)
    with pytest.raises(Unauthenticated):
        await accounts.verify(secret)


async def test_api_key_records_last_use(accounts: Accounts) -> None:
    user = await accounts.ensure_user("user@example.com")
    _, secret = await accounts.create_api_key(user, "", None)
    principal = await accounts.verify(secret)
    keys, _ = await accounts.list_api_keys(principal, 0, "")
    assert keys[0].display_name == "API key"
    assert keys[0].last_use_time is not None
    assert abs((utc_now() - keys[0].last_use_time).total_seconds()) < 60


async def test_unknown_and_malformed_tokens_are_unauthenticated(accounts: Accounts) -> None:
    for token in ["mk_not-a-real-key", "garbage", ""]:
        with pytest.raises(Unauthenticated):
            await accounts.verify(token)


async def test_expired_api_key_is_unauthenticated(accounts: Accounts, database_url: str) -> None:
    user = await accounts.ensure_user("user@example.com")
    key, secret = await accounts.create_api_key(user, "short", utc_now() + timedelta(hours=1))
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE api_keys SET expire_time = :t WHERE id = :id"),
                {"t": (utc_now() - timedelta(seconds=1)).replace(tzinfo=None), "id": key.id},
            )
    finally:
        engine.dispose()
    with pytest.raises(Unauthenticated, match="expired"):
        await accounts.verify(secret)


async def test_expire_time_in_the_past_is_invalid(accounts: Accounts) -> None:
    user = await accounts.ensure_user("user@example.com")
    with pytest.raises(InvalidArgument) as caught:
        await accounts.create_api_key(user, "old", utc_now() - timedelta(minutes=1))
    assert caught.value.violations[0].field == "expire_time"


async def test_display_name_too_long_is_invalid(accounts: Accounts) -> None:
    user = await accounts.ensure_user("user@example.com")
    with pytest.raises(InvalidArgument) as caught:
        await accounts.create_api_key(user, "x" * 101, None)
    assert caught.value.violations[0].field == "display_name"


async def test_another_users_key_is_not_found_and_survives(accounts: Accounts) -> None:
    alice = await accounts.ensure_user("alice@example.com")
    bob = await accounts.ensure_user("bob@example.com")
    alice_key, alice_secret = await accounts.create_api_key(alice, "a", None)
    _, bob_secret = await accounts.create_api_key(bob, "b", None)
    bob_principal = await accounts.verify(bob_secret)
    with pytest.raises(NotFound):
        await accounts.delete_api_key(bob_principal, alice_key.id)
    bob_keys, _ = await accounts.list_api_keys(bob_principal, 0, "")
    assert [k.display_name for k in bob_keys] == ["b"]
    assert (await accounts.verify(alice_secret)).user_id == alice.id


async def test_listing_pages_through_every_key_once(accounts: Accounts) -> None:
    user = await accounts.ensure_user("many@example.com")
    created = [(await accounts.create_api_key(user, f"k{i}", None))[0].id for i in range(7)]
    principal = await accounts.verify((await accounts.create_api_key(user, "last", None))[1])
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        keys, token = await accounts.list_api_keys(principal, 3, token)
        pages += 1
        seen += [k.id for k in keys]
        if not token:
            break
    assert pages == 3
    assert seen[:7] == created
    assert len(seen) == len(set(seen)) == 8


@pytest.mark.parametrize(("size", "token", "field"), [(-1, "", "page_size"), (10, "%%%not-a-token", "page_token")])
async def test_bad_paging_arguments_name_the_field(accounts: Accounts, size: int, token: str, field: str) -> None:
    user = await accounts.ensure_user("user@example.com")
    principal = await accounts.verify((await accounts.create_api_key(user, "k", None))[1])
    with pytest.raises(InvalidArgument) as caught:
        await accounts.list_api_keys(principal, size, token)
    assert caught.value.violations[0].field == field


async def test_token_cache_forgets_a_deleted_key_at_once(accounts: Accounts) -> None:
    verifier = CachingTokenVerifier(accounts, ttl_s=300)
    accounts.revocation_listeners.append(verifier.forget_credential)
    user = await accounts.ensure_user("user@example.com")
    key, secret = await accounts.create_api_key(user, "k", None)
    principal = await verifier.verify(secret)
    assert (await verifier.verify(secret)) == principal
    await accounts.delete_api_key(principal, key.id)
    with pytest.raises(Unauthenticated):
        await verifier.verify(secret)
