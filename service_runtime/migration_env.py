"""The body of every service's Alembic ``env.py``: run migrations on the connection handed in.

A service's ``migrations/env.py`` imports its models and calls :func:`run_migrations` with their metadata.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData


def run_migrations(target_metadata: MetaData) -> None:
    """Upgrade on the connection that :func:`service_runtime.database.migrate` put in the config."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
