"""Builds the NotificationService process: migrations, storage, senders, the delivery worker, servicer, host."""

from __future__ import annotations

import logging
from pathlib import Path

from monitors.v1 import notification_service_pb2, notification_service_pb2_grpc
from service_runtime.database import open_database
from service_runtime.egress import EgressConfig, EgressPolicy
from service_runtime.server import RegisteredService, ServiceHost, host_with_remote_auth
from service_runtime.settings import Role, Settings
from services.notify_svc.delivery import DeliveryWorker, Senders
from services.notify_svc.delivery_queue import DeliveryQueue
from services.notify_svc.domain import ChannelKind
from services.notify_svc.notifications import TEST_CHANNEL_RATE, Notifications
from services.notify_svc.senders.apprise_urls import AppriseSender
from services.notify_svc.senders.base import Sender, sender_client
from services.notify_svc.senders.discord import DiscordSender
from services.notify_svc.senders.mail import OutboxSender, SendGridSender, SmtpSender
from services.notify_svc.senders.pagerduty import PagerDutySender
from services.notify_svc.senders.slack import slack_sender
from services.notify_svc.senders.teams import teams_sender
from services.notify_svc.senders.webhook import WebhookSender
from services.notify_svc.servicer import NotificationServiceServicer
from services.notify_svc.settings import NotifySettings
from services.notify_svc.store import ChannelStore

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_notify"
SERVICE_NAME = notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name
# Our services' RPC, for their roles' tokens only: the alert service sends alerts, the monitor service login
# codes.
INTERNAL_METHODS: dict[str, tuple[Role, ...]] = {f"/{SERVICE_NAME}/SendNotification": ("alert", "monitor")}


def email_sender(settings: Settings, own: NotifySettings) -> Sender:
    """SendGrid when its key is set, else SMTP when its URL is set, else the local outbox file."""
    if own.sendgrid_api_key:
        return SendGridSender(own.sendgrid_api_key, own.sendgrid_host, own.email_from)
    if own.smtp_url:
        return SmtpSender(own.smtp_url, own.email_from)
    outbox = settings.data_dir / "outbox.txt"
    if not settings.embedded:
        # Once at start, not an INFO line per email.
        log.warning(
            f"no email provider (MONITORS_SENDGRID_API_KEY or MONITORS_SMTP_URL): emails, login codes included,"
            f" are written to {outbox} and reach no one"
        )
    return OutboxSender(outbox, own.email_from, log_each=settings.embedded)


async def build_server(settings: Settings) -> ServiceHost:
    """A ready-to-start host for NotificationService with ``settings``."""
    own = NotifySettings.from_env(settings.env)  # a bad value stops us before the migrations too
    test_channel_rate = TEST_CHANNEL_RATE.from_env(settings.env, "MONITORS_TEST_CHANNEL")
    box = settings.secret_box()  # a bad master key stops us before the migrations
    database = await open_database(settings.database_url, MIGRATIONS, VERSION_TABLE)
    channels = ChannelStore(database, box, settings.max_channels_per_user)
    queue = DeliveryQueue(database, box)
    egress = EgressConfig(policy=EgressPolicy(settings.egress), ca_file=settings.ca_file)
    client = sender_client(egress)
    senders = Senders(
        {
            ChannelKind.EMAIL: email_sender(settings, own),
            ChannelKind.SLACK: slack_sender(client),
            ChannelKind.DISCORD: DiscordSender(client),
            ChannelKind.TEAMS: teams_sender(client),
            ChannelKind.WEBHOOK: WebhookSender(client, egress.policy),
            ChannelKind.PAGERDUTY: PagerDutySender(client, own.pagerduty_events_url),
            ChannelKind.APPRISE: AppriseSender(egress.policy),
        }
    )
    worker = DeliveryWorker(channels, queue, senders, timeout_s=own.timeout_s)
    servicer = NotificationServiceServicer(Notifications(channels, queue, worker, egress.policy, test_channel_rate))
    add = notification_service_pb2_grpc.add_NotificationServiceServicer_to_server
    host = await host_with_remote_auth(
        settings,
        [RegisteredService(SERVICE_NAME, servicer, add)],
        database,
        internal_methods=INTERNAL_METHODS,
        role_tokens=settings.accepted_role_tokens(INTERNAL_METHODS),
    )
    host.background.append(worker.run)
    host.on_stop.append(client.aclose)
    return host
