"""Builds the NotificationService process: migrations, storage, servicer, interceptors, health, reflection."""

from __future__ import annotations

from pathlib import Path

from monitors.v1 import notification_service_pb2, notification_service_pb2_grpc
from service_runtime.database import open_database
from service_runtime.server import RegisteredService, ServiceHost, host_with_remote_auth
from service_runtime.settings import Settings
from services.notify_svc.servicer import NotificationServiceServicer

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_notify"
SERVICE_NAME = notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


async def build_server(settings: Settings) -> ServiceHost:
    """A ready-to-start host for NotificationService with ``settings``."""
    database = await open_database(settings.database_url, MIGRATIONS, VERSION_TABLE)
    # The RPCs of later issues are served by the generated base class (UNIMPLEMENTED) until they land;
    # mypy-protobuf marks them abstract.
    servicer = NotificationServiceServicer()  # type: ignore[abstract]
    add = notification_service_pb2_grpc.add_NotificationServiceServicer_to_server
    service = RegisteredService(SERVICE_NAME, servicer, add)
    return await host_with_remote_auth(settings, [service], database)
