"""Alembic environment of the alert service: its own history, in its own version table."""

from service_runtime.migration_env import run_migrations
from services.alert_svc.store import Base

run_migrations(Base.metadata)
