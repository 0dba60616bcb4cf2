"""Alembic environment of the monitor service: its own history, in its own version table."""

from service_runtime.migration_env import run_migrations
from services.monitor_svc.schema import Base

run_migrations(Base.metadata)
