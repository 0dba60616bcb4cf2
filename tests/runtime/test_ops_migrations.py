"""Migrations on the harness's real MariaDB: one process at a time per database, and a database whose character
set is not utf8mb4 refused in one line, or carried to the head if its older migrations ran on one."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from harness import dying_with_parent
from harness.external import MariaDBServer
from harness.services import REPO, python_env
from service_runtime.database import MYSQL_COLLATION, create_sync_engine, migrate
from service_runtime.settings import StartupError
from services.alert_svc import server as alert_server
from services.monitor_svc import server as monitor_server
from services.notify_svc import server as notify_server

SERVICES = [monitor_server, notify_server, alert_server]
_names = itertools.count()


def create_database(mariadb: MariaDBServer, charset: str) -> tuple[str, str]:
    """A fresh database with ``charset`` as its default; its name and URL."""
    name = f"migrations_{charset}_{next(_names)}"
    connection = mariadb.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET {charset}")
    finally:
        connection.close()
    return name, f"mysql+pymysql://{mariadb.user}:{mariadb.password}@127.0.0.1:{mariadb.port}/{name}"


def run_sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(statement))
            return [tuple(row) for row in result.all()] if result.returns_rows else []
    finally:
        engine.dispose()


def upgrade_without_checks(url: str, migrations: Path, version_table: str, revision: str) -> None:
    """Alembic itself, as the migrations ran before start-up checked the character set."""
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(migrations))
            config.attributes["connection"] = connection
            config.attributes["version_table"] = version_table
            command.upgrade(config, revision)
    finally:
        engine.dispose()


# Imports first, then waits for a shared moment, so the processes migrate together (Alembic's context is one
# per process: threads cannot stand in for processes here).
MIGRATE_AT = """
import sys, time
from service_runtime.database import migrate
from services.{module} import server
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
migrate(sys.argv[1], server.MIGRATIONS, server.VERSION_TABLE)
"""


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_services_starting_together_on_an_empty_database_all_migrate_it(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Before the lock, one of two died with "Table 'alembic_version_monitor' already exists"."""
    for round in range(2):
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'round{round}.sqlite3'}"
        else:
            _, url = create_database(request.getfixturevalue("mariadb"), "utf8mb4")
        moment = str(time.time() + 8)
        processes = [
            subprocess.Popen(
                dying_with_parent([sys.executable, "-c", MIGRATE_AT.format(module=module), url, moment]),
                env=python_env({}),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for module in ("monitor_svc", "monitor_svc", "notify_svc", "notify_svc", "alert_svc")
        ]
        outcomes = [(process.wait(timeout=120), process.communicate()[1]) for process in processes]
        assert [code for code, _ in outcomes] == [0] * len(processes), outcomes
        assert len(run_sql(url, "SELECT version_num FROM alembic_version_monitor")) == 1


@pytest.mark.parametrize("charset", ["latin1", "utf8mb3"])
def test_a_database_that_is_not_utf8mb4_is_refused_in_one_line_before_any_table(
    mariadb: MariaDBServer, charset: str
) -> None:
    name, url = create_database(mariadb, charset)
    with pytest.raises(StartupError) as refused:
        migrate(url, monitor_server.MIGRATIONS, monitor_server.VERSION_TABLE)
    message = str(refused.value)
    assert "\n" not in message
    assert charset in message
    assert f"ALTER DATABASE `{name}` CHARACTER SET utf8mb4" in message
    assert run_sql(url, "SHOW TABLES") == []


@pytest.mark.parametrize("charset", ["latin1", "utf8mb3"])
def test_a_database_converted_to_utf8mb4_after_older_migrations_reaches_the_head(
    mariadb: MariaDBServer, charset: str
) -> None:
    """0006 ran on a latin1 or utf8mb3 database (which start-up now refuses): converting its tables to utf8mb4
    made their TEXT columns MEDIUMTEXT, and 0007 then failed for good with KeyError 'mediumtext'."""
    name, url = create_database(mariadb, charset)
    upgrade_without_checks(url, monitor_server.MIGRATIONS, monitor_server.VERSION_TABLE, "0006")
    run_sql(url, f"ALTER DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {MYSQL_COLLATION}")
    migrate(url, monitor_server.MIGRATIONS, monitor_server.VERSION_TABLE)
    scripts = Config()
    scripts.set_main_option("script_location", str(monitor_server.MIGRATIONS))
    head = ScriptDirectory.from_config(scripts).get_current_head()
    assert run_sql(url, "SELECT version_num FROM alembic_version_monitor")[0][0] == head
    columns = run_sql(
        url,
        "SELECT data_type, collation_name FROM information_schema.columns WHERE table_schema = DATABASE()"
        " AND table_name = 'monitors' AND column_name IN ('spec', 'locations', 'labels')",
    )
    assert columns == [("mediumtext", MYSQL_COLLATION)] * 3
