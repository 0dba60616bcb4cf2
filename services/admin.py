"""Operator commands, run beside the monitor service with the same settings (embedded or production).

    python -m services.admin create-api-key --email someone@example.com [--name NAME]

creates the user if new, and prints a new API key on stdout (and nothing else there, so scripts can capture
it). Uses MONITORS_DATABASE_URL / MONITORS_DATA_DIR exactly as the monitor service does, and applies its
migrations first, so it works on a fresh machine before any service has started.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from service_runtime.database import Database, migrate
from service_runtime.errors import DomainError
from service_runtime.settings import Settings
from services.monitor_svc.accounts import Accounts
from services.monitor_svc.server import MIGRATIONS, VERSION_TABLE
from services.monitor_svc.store import AccountStore


async def create_api_key(settings: Settings, email: str, name: str) -> str:
    """Create the user if needed and a key for them; return the key's secret."""
    migrate(settings.database_url, MIGRATIONS, VERSION_TABLE)
    database = Database(settings.database_url)
    try:
        accounts = Accounts(AccountStore(database))
        user = await accounts.ensure_user(email)
        _, secret = await accounts.create_api_key(user, name, None)
        return secret
    finally:
        await database.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-api-key", help="create a user if new and print a new API key")
    create.add_argument("--email", required=True, help="the user's email address")
    create.add_argument("--name", default="admin CLI", help="a label for the key (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        secret = asyncio.run(create_api_key(Settings.from_env("monitor"), args.email, args.name))
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    print(secret)
    print(f"API key created for {args.email.strip().lower()}; it is shown only once.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
