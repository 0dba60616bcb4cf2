"""Builds the AlertService process: migrations, storage, servicer, interceptors, health, reflection."""

from __future__ import annotations

from pathlib import Path

from monitors.v1 import alert_service_pb2, alert_service_pb2_grpc
from service_runtime.database import open_database
from service_runtime.server import RegisteredService, ServiceHost, host_with_remote_auth
from service_runtime.settings import Settings
from services.alert_svc.servicer import AlertServiceServicer

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_alert"
SERVICE_NAME = alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name


async def build_server(settings: Settings) -> ServiceHost:
    """A ready-to-start host for AlertService with ``settings``."""
    database = await open_database(settings.database_url, MIGRATIONS, VERSION_TABLE)
    # The RPCs of later issues are served by the generated base class (UNIMPLEMENTED) until they land;
    # mypy-protobuf marks them abstract.
    servicer = AlertServiceServicer()  # type: ignore[abstract]
    service = RegisteredService(SERVICE_NAME, servicer, alert_service_pb2_grpc.add_AlertServiceServicer_to_server)
    return await host_with_remote_auth(settings, [service], database)
