"""Operator commands, run beside the monitor service with the same settings (embedded or production).

    python -m services.admin create-api-key --email someone@example.com [--name NAME]

creates the user if new, and prints a new API key on stdout (and nothing else there, so scripts can capture
it). Uses MONITORS_DATABASE_URL / MONITORS_DATA_DIR exactly as the monitor service does, and applies its
migrations first, so it works on a fresh machine before any service has started.

    python -m services.admin new-master-key

prints a new key for MONITORS_MASTER_KEY (and nothing else on stdout); it touches no database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from service_runtime.database import Database, migrate
from service_runtime.errors import DomainError
from service_runtime.secretbox import KEY_FORMATS, new_master_key
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
    commands.add_parser(
        "new-master-key",
        help="print a new key for MONITORS_MASTER_KEY",
        description=f"Print a new random key for MONITORS_MASTER_KEY. The variable takes keys of {KEY_FORMATS};"
        " several, comma-separated, when rotating: the first seals, all open.",
    )
    args = parser.parse_args(argv)
    if args.command == "new-master-key":
        print(new_master_key())
        print(
            "Keep it secret and give the same MONITORS_MASTER_KEY to the monitor and notification services;"
            " sealed secrets cannot be opened without it.",
            file=sys.stderr,
        )
        return 0
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
