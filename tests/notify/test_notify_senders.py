"""Each sender against a real server speaking its provider's protocol: SendGrid's client pointed at a loopback
receiver with ``host=``, SMTP through a local aiosmtpd server, PagerDuty's trigger/acknowledge/resolve, Discord's
colours, Teams' Adaptive Card, Apprise's JSON notifier, the outbox file; plus timeouts, refused targets, and the
message texts and templates.

Loopback receivers (harness/receivers.py) stand in for the public SendGrid, PagerDuty, Discord and Teams
endpoints; aiosmtpd stands in for a mail server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from harness.http import HttpServer, Reply
from harness.receivers import PAGERDUTY_PATH, SENDGRID_KEY, SENDGRID_PATH, ProviderReceivers
from harness.services import free_port
from service_runtime.egress import EgressConfig, EgressPolicy
from service_runtime.http_client import HttpClient
from services.notify_svc.domain import (
    AppriseConfig,
    DiscordConfig,
    EmailConfig,
    MessageTemplate,
    Notification,
    NotificationKind,
    Outcome,
    PagerDutyConfig,
    Severity,
    TeamsConfig,
    WebhookConfig,
)
from services.notify_svc.senders.apprise_urls import AppriseSender
from services.notify_svc.senders.base import parse_retry_after, sender_client
from services.notify_svc.senders.discord import COLOURS, RESOLVED_COLOUR, DiscordSender
from services.notify_svc.senders.mail import OutboxSender, SendGridSender, SmtpSender
from services.notify_svc.senders.pagerduty import PagerDutySender
from services.notify_svc.senders.teams import teams_sender
from services.notify_svc.senders.webhook import WebhookSender
from services.notify_svc.templates import Message, render

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
WHEN = datetime(2001, 1, 1, 12, 30, tzinfo=UTC)  # only rendered, never compared with now
FIRING = Notification(
    NotificationKind.ALERT_FIRING,
    Severity.CRITICAL,
    alert_id="alr_7",
    monitor_id="mon_3",
    monitor_name="Shop",
    summary="response time above 500 ms",
    value=812.0,
    threshold=500.0,
    event_time=WHEN,
)


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture
async def client(receivers: ProviderReceivers) -> AsyncIterator[HttpClient]:
    found = sender_client(EgressConfig(EgressPolicy.PRIVATE_ALLOWED, ca_file=str(receivers.ca_file)))
    yield found
    await found.aclose()


class MailSink:
    """An aiosmtpd handler keeping what it accepts; ``refuse`` maps an address to an SMTP reply."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[MailSink, int]]:
    sink, port = MailSink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def test_default_messages_say_what_fired_the_value_the_threshold_the_monitor_when_and_the_alert() -> None:
    message = render(FIRING)
    assert message.title == "[CRITICAL] Shop: response time above 500 ms"
    for fact in ("response time above 500 ms", "812", "threshold 500", "Shop (mon_3)", "2001-01-01 12:30:00", "alr_7"):
        assert fact in message.body
    price = render(replace(FIRING, value=71234.56, threshold=70000.0))
    assert "Value: 71234.56 (threshold 70000)" in price.body  # a price as it is, not rounded to six digits
    resolved = render(
        Notification(NotificationKind.ALERT_RESOLVED, alert_id="alr_7", summary="down", duration=timedelta(seconds=303))
    )
    assert resolved.title.startswith("Resolved:")
    assert "Lasted: 5m 3s" in resolved.body


def test_an_alert_on_a_state_says_no_value_or_threshold() -> None:
    """A monitor down (or silent) has no value: the alert service sends 0 and 0, and the message leaves the
    line out instead of 'Value: 1 (threshold 0)'."""
    down = render(replace(FIRING, summary="Shop is down: HTTP 503", value=0.0, threshold=0.0))
    assert "Value:" not in down.body
    assert "What: Shop is down: HTTP 503" in down.body


def test_templates_are_sandboxed_and_fall_back_to_the_default() -> None:
    mine = render(
        FIRING, MessageTemplate(title="{{ monitor_name }} is {{ severity }}", body="{{ value }} > {{ threshold }}")
    )
    assert (mine.title, mine.body) == ("Shop is critical", "812.0 > 500.0")
    for hostile in ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ 'x' * 1000000000 }}", "{{ 9 ** 999999 }}"):
        assert render(FIRING, MessageTemplate(body=hostile)).body == render(FIRING).body
    # Login codes never go through a user's template.
    code = Notification(NotificationKind.LOGIN_CODE, login_code="123456")
    assert "123456" in render(code, MessageTemplate(body="nothing here")).body


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 01 Jan 2001 00:00:30 GMT", now=datetime(2001, 1, 1, tzinfo=UTC).timestamp()) == 30.0
    assert parse_retry_after("999999") == 3600.0
    assert parse_retry_after("soon") is None


async def test_pagerduty_triggers_acknowledges_and_resolves_one_incident_by_alert_id(
    client: HttpClient, receivers: ProviderReceivers
) -> None:
    sender = PagerDutySender(client, receivers.url("pagerduty"))
    config = PagerDutyConfig(ROUTING_KEY)
    for kind in (NotificationKind.ALERT_FIRING, NotificationKind.ALERT_ACKNOWLEDGED, NotificationKind.ALERT_RESOLVED):
        message = render(Notification(kind, Severity.CRITICAL, alert_id="alr_7", summary="down"))
        result = await sender.send(config, message, "dlv_1", 5.0)
        assert (result.outcome, result.response_code) == (Outcome.SUCCESS, 202)
    events = [r.json for r in receivers.received(PAGERDUTY_PATH)[-3:]]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {"alr_7"}
    assert events[0]["payload"]["severity"] == "critical"

    refused = await sender.send(PagerDutyConfig("0" * 31), render(FIRING), "dlv_2", 5.0)
    assert (refused.outcome, refused.response_code) == (Outcome.PERMANENT, 400)
    assert "invalid event" in refused.detail


async def test_discord_embeds_are_coloured_by_severity(client: HttpClient, receivers: ProviderReceivers) -> None:
    url = receivers.url("discord", "colours")
    sender = DiscordSender(client)
    for severity in Severity:
        result = await sender.send(
            DiscordConfig(url), render(Notification(NotificationKind.ALERT_FIRING, severity)), "d", 5
        )
        assert (result.outcome, result.response_code) == (Outcome.SUCCESS, 204)
    await sender.send(DiscordConfig(url), render(Notification(NotificationKind.ALERT_RESOLVED)), "d", 5)
    embeds = [r.json["embeds"][0] for r in receivers.received("/discord/colours")]
    assert [e["color"] for e in embeds] == [*(COLOURS[s] for s in Severity), RESOLVED_COLOUR]
    assert all(r.json["allowed_mentions"] == {"parse": []} for r in receivers.received("/discord/colours"))


async def test_teams_gets_an_adaptive_card(client: HttpClient, receivers: ProviderReceivers) -> None:
    result = await teams_sender(client).send(TeamsConfig(receivers.url("teams", "card")), render(FIRING), "d", 5)
    assert (result.outcome, result.response_code) == (Outcome.SUCCESS, 202)
    card = receivers.received("/teams/card")[-1].json["attachments"][0]["content"]
    assert card["body"][0]["text"] == render(FIRING).title


async def test_a_slow_endpoint_times_out_as_a_retryable_failure(
    client: HttpClient, receivers: ProviderReceivers
) -> None:
    url = receivers.url("webhook", "slow")
    receivers.script("/webhook/slow", Reply(200, b"late", delay_s=3.0))
    started = time.monotonic()
    result = await WebhookSender(client).send(WebhookConfig(url, "s" * 20), render(FIRING), "d", 0.5)
    assert time.monotonic() - started < 2.0
    assert (result.outcome, result.response_code) == (Outcome.RETRYABLE, 0)
    assert "no answer within 0.5s" in result.detail


async def test_a_private_target_is_refused_under_the_public_policy(receivers: ProviderReceivers) -> None:
    public = sender_client(EgressConfig(EgressPolicy.PUBLIC, ca_file=str(receivers.ca_file)))
    try:
        url = receivers.url("webhook", "private")
        result = await WebhookSender(public).send(WebhookConfig(url, "s" * 20), render(FIRING), "d", 2.0)
    finally:
        await public.aclose()
    assert result.outcome is Outcome.PERMANENT
    assert result.detail.startswith("refused target")
    assert receivers.received("/webhook/private") == []


async def test_sendgrid_sends_text_and_html_through_its_official_client(receivers: ProviderReceivers) -> None:
    sender = SendGridSender(SENDGRID_KEY, receivers.sendgrid_host, "alerts@monitors.example")
    result = await sender.send(EmailConfig(("ops@example.com",)), render(FIRING), "d", 5.0)
    assert (result.outcome, result.response_code) == (Outcome.SUCCESS, 202)
    mail = receivers.received(SENDGRID_PATH)[-1].json
    assert mail["personalizations"][0]["to"] == [{"email": "ops@example.com"}]
    assert mail["subject"] == render(FIRING).title
    assert [c["type"] for c in mail["content"]] == ["text/plain", "text/html"]

    wrong_key = SendGridSender("SG.wrong", receivers.sendgrid_host, "alerts@monitors.example")
    refused = await wrong_key.send(EmailConfig(("ops@example.com",)), render(FIRING), "d", 5.0)
    assert (refused.outcome, refused.response_code) == (Outcome.PERMANENT, 401)
    receivers.script(SENDGRID_PATH, Reply(429, b'{"errors":[{"message":"too many"}]}', {"Retry-After": "12"}))
    limited = await sender.send(EmailConfig(("ops@example.com",)), render(FIRING), "d", 5.0)
    assert (limited.outcome, limited.response_code, limited.retry_after_s) == (Outcome.RETRYABLE, 429, 12.0)


async def test_smtp_delivers_a_multipart_mail_and_classifies_refusals(smtp: tuple[MailSink, int]) -> None:
    sink, port = smtp
    sender = SmtpSender(f"smtp://127.0.0.1:{port}", "alerts@monitors.example")
    result = await sender.send(EmailConfig(("ops@example.com",)), render(FIRING), "d", 5.0)
    assert (result.outcome, result.response_code) == (Outcome.SUCCESS, 250)
    mail = sink.messages[-1]
    assert mail["Subject"] == render(FIRING).title
    assert [part.get_content_type() for part in mail.walk()] == ["multipart/alternative", "text/plain", "text/html"]

    sink.refuse = {"gone@example.com": "550 5.1.1 no such user", "busy@example.com": "451 4.3.0 try again later"}
    gone = await sender.send(EmailConfig(("gone@example.com",)), render(FIRING), "d", 5.0)
    busy = await sender.send(EmailConfig(("busy@example.com",)), render(FIRING), "d", 5.0)
    assert (gone.outcome, gone.response_code) == (Outcome.PERMANENT, 550)
    assert (busy.outcome, busy.response_code) == (Outcome.RETRYABLE, 451)


async def test_a_title_with_a_line_separator_is_mailed_on_one_line_and_an_unbuildable_one_is_a_result(
    smtp: tuple[MailSink, int], tmp_path: Path
) -> None:
    sink, port = smtp
    sender = SmtpSender(f"smtp://127.0.0.1:{port}", "alerts@monitors.example")
    named = Notification(NotificationKind.ALERT_FIRING, Severity.CRITICAL, monitor_name="web\u2028prod", summary="x")
    result = await sender.send(EmailConfig(("ops@example.com",)), render(named), "d", 5.0)
    assert (result.outcome, result.response_code) == (Outcome.SUCCESS, 250)
    assert sink.messages[-1]["Subject"] == "[CRITICAL] web prod: x"
    # A message render() did not make: the email library refuses it, and that is a final answer, not a raise.
    raw = Message(title="a\u2028b", body="", notification=named)
    for mailer in (sender, OutboxSender(tmp_path / "outbox.txt", "monitors@localhost")):
        refused = await mailer.send(EmailConfig(("ops@example.com",)), raw, "d", 5.0)
        assert refused.outcome is Outcome.PERMANENT
        assert refused.detail.startswith("cannot build the email")


async def test_without_a_provider_email_goes_to_the_outbox_and_the_log_never_holds_the_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = tmp_path / "outbox.txt"
    code = Notification(NotificationKind.LOGIN_CODE, login_code="987654")
    with caplog.at_level(logging.INFO):
        result = await OutboxSender(outbox, "monitors@localhost").send(
            EmailConfig(("dana@example.com",)), render(code), "d", 5
        )
    assert result.outcome is Outcome.SUCCESS
    assert "987654" in outbox.read_text()
    assert "To: dana@example.com" in outbox.read_text()
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert str(outbox) in logged
    assert "987654" not in logged
    assert "dana@example.com" not in logged


async def test_apprise_urls_are_sent_through_apprise_and_checked_against_the_egress_policy() -> None:
    with HttpServer() as server:
        server.routes["/notify"] = Reply(200, b"{}")
        url = server.url("/notify").replace("http://", "json://")
        sent = await AppriseSender(EgressPolicy.PRIVATE_ALLOWED).send(AppriseConfig(url), render(FIRING), "d", 5.0)
        assert sent.outcome is Outcome.SUCCESS
        assert server.requests[-1][0] == "POST"
        refused = await AppriseSender(EgressPolicy.PUBLIC).send(AppriseConfig(url), render(FIRING), "d", 5.0)
        assert refused.outcome is Outcome.PERMANENT
        assert len(server.requests) == 1
    metadata = await AppriseSender(EgressPolicy.PRIVATE_ALLOWED).send(
        AppriseConfig("json://169.254.169.254/latest"), render(FIRING), "d", 5.0
    )
    assert metadata.outcome is Outcome.PERMANENT
    unknown = await AppriseSender(EgressPolicy.PUBLIC).send(AppriseConfig("nosuchscheme://x"), render(FIRING), "d", 1)
    assert unknown.outcome is Outcome.PERMANENT


async def test_blocking_provider_clients_never_hold_the_event_loop(smtp: tuple[MailSink, int]) -> None:
    # A mail server that accepts the connection but never greets: the send gives up at its timeout while
    # the loop keeps running other work.
    greeted: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeted.append(writer)

    silent = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.05)

    ticker = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        sender = SmtpSender(f"smtp://127.0.0.1:{port}", "alerts@monitors.example")
        result = await sender.send(EmailConfig(("ops@example.com",)), render(FIRING), "d", 0.5)
        assert time.monotonic() - started < 2.5
    finally:
        ticker.cancel()
        for writer in greeted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert result.outcome is Outcome.RETRYABLE
    assert ticks >= 5
