"""Alembic environment of the notify service: its own history, in its own version table."""

from sqlalchemy import MetaData

from service_runtime.migration_env import run_migrations

run_migrations(MetaData())
