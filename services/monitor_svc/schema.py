"""The monitor service's database schema: the ORM base every store's tables declare on, and its migrations.

Stores (accounts, monitors, secrets, pings) and the Alembic environment share this module, not one another.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import DeclarativeBase

MIGRATIONS = Path(__file__).parent / "migrations"
# Each service keeps its own Alembic history in its own version table, so services may share one database.
VERSION_TABLE = "alembic_version_monitor"


class Base(DeclarativeBase):
    pass
