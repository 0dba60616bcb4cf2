"""Alembic environment of the notify service: its own history, in its own version table."""

from service_runtime.migration_env import run_migrations
from services.notify_svc.schema import Base

run_migrations(Base.metadata)
