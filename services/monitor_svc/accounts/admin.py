"""Operator commands, run beside the monitor service with the same settings (embedded or production).

    python -m services.admin create-api-key --email someone@example.com [--name NAME]

creates the user if new, and prints a new API key on stdout (and nothing else there, so scripts can capture
it). Uses MONITORS_DATABASE_URL / MONITORS_DATA_DIR exactly as the monitor service does. Embedded, it refuses a
data directory where the monitor service has not migrated its database yet, naming it: a key made in a database
no service uses would never work. A production database is migrated first, so it works before any service starts.

    python -m services.admin new-master-key

prints a new key for MONITORS_MASTER_KEY (and nothing else on stdout); it touches no database.

    python -m services.admin doctor

checks every dependency the settings name, one line each (services/doctor.py), and exits 1 if one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

from sqlalchemy import make_url

from service_runtime.database import Database, migrate
from service_runtime.errors import DomainError
from service_runtime.secretbox import KEY_FORMATS, new_master_key
from service_runtime.settings import Settings, SettingsError
from services import doctor
from services.monitor_svc.accounts.accounts import Accounts
from services.monitor_svc.accounts.store import AccountStore
from services.monitor_svc.schema import MIGRATIONS, VERSION_TABLE


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


def embedded_database_missing(settings: Settings) -> str | None:
    """Why the embedded monitor database of ``settings`` is not one the monitor service has made, or None."""
    if not settings.embedded:
        return None
    path = Path(make_url(settings.database_url).database or "")
    where = (
        f"MONITORS_DATA_DIR={settings.data_dir}"
        if path.parent == settings.data_dir
        else f"MONITORS_DATABASE_URL={settings.database_url}"
    )
    if not path.is_file():
        why = f"{path} does not exist"
    else:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
                found = connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (VERSION_TABLE,)).fetchone()
        except sqlite3.DatabaseError as error:
            found, why = None, f"{path} cannot be read as a database: {error}"
        else:
            why = f"{path} holds no migrated monitor database"
        if found:
            return None
    return (
        f"no monitor database in {where} ({why}). Start the services there first (make run), or set "
        "MONITORS_DATA_DIR to the directory they use: a key made in a new database would never work with them."
    )


def run_doctor() -> int:
    """Print the doctor's findings on stdout; 1 when a check failed, 2 when the settings cannot be read."""
    try:
        findings = asyncio.run(doctor.examine())
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    text, status = doctor.report(findings)
    print(text)
    return status


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
    commands.add_parser(
        "doctor",
        help="check every dependency the settings name, one line each; exit 1 if one fails",
        description=doctor.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return run_doctor()
    if args.command == "new-master-key":
        print(new_master_key())
        print(
            "Keep it secret and give the same MONITORS_MASTER_KEY to the monitor and notification services;"
            " sealed secrets cannot be opened without it.",
            file=sys.stderr,
        )
        return 0
    settings = Settings.from_env("monitor")
    if (missing := embedded_database_missing(settings)) is not None:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    try:
        secret = asyncio.run(create_api_key(settings, args.email, args.name))
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    print(secret)
    print(f"API key created for {args.email.strip().lower()}; it is shown only once.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
