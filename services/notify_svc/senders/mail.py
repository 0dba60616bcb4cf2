"""Email: SendGrid (the official library), SMTP for self-hosters, or a local outbox file when neither is
configured, so a local user can still read login codes (the log line says where, never the code).

Both providers are synchronous clients: each send runs in a thread of the sender's :class:`BlockingRunner`
(a few at once; beyond that the send is answered "busy", retryable), bounded by a timeout given to the client,
by a wait on the thread and, for SMTP, by shutting the socket down at the deadline.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import smtplib
import socket
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import sendgrid  # type: ignore[import-untyped]
from python_http_client.exceptions import HTTPError  # type: ignore[import-untyped]
from sendgrid.helpers.mail import Mail  # type: ignore[import-untyped]

from services.notify_svc.domain import ChannelConfig, EmailConfig, Outcome, mask_address
from services.notify_svc.senders.base import (
    BUSY,
    BlockingRunner,
    Busy,
    SendResult,
    classify,
    failure,
    parse_retry_after,
)
from services.notify_svc.templates import Message

log = logging.getLogger(__name__)


def html_body(message: Message) -> str:
    return (
        "<!doctype html><html><body>"
        f"<h2>{html.escape(message.title)}</h2>"
        f'<pre style="font-family:inherit;white-space:pre-wrap">{html.escape(message.body)}</pre>'
        "</body></html>"
    )


def email_message(sender: str, to: tuple[str, ...], message: Message) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = message.title
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    mail.set_content(message.body)
    mail.add_alternative(html_body(message), subtype="html")
    return mail


def unsendable(error: ValueError) -> SendResult:
    """A message the email library refuses to build: no retry would change it."""
    return SendResult(Outcome.PERMANENT, 0, f"cannot build the email: {error}"[:300])


class SendGridSender:
    """SendGrid's v3 mail/send through ``sendgrid.SendGridAPIClient`` (``host`` for its EU region or a test)."""

    def __init__(self, api_key: str, host: str, sender: str, runner: BlockingRunner | None = None) -> None:
        self._api_key = api_key
        self._host = host
        self._from = sender
        self._runner = runner or BlockingRunner(name="notify-sendgrid")

    def _send(self, to: tuple[str, ...], message: Message, timeout_s: float) -> SendResult:
        client = sendgrid.SendGridAPIClient(api_key=self._api_key, host=self._host)
        client.client.timeout = timeout_s  # python_http_client passes it to every request
        try:
            mail = Mail(
                from_email=self._from,
                to_emails=list(to),
                subject=message.title,
                plain_text_content=message.body,
                html_content=html_body(message),
            )
        except ValueError as error:
            return unsendable(error)
        try:
            response = client.send(mail)
        except HTTPError as error:
            body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else str(error.body)
            retry_after = parse_retry_after(dict(error.headers or {}).get("Retry-After"))
            return classify(int(error.status_code), body[:300], retry_after)
        except Exception as error:  # noqa: BLE001 - urllib's timeouts and socket errors
            return failure(error, timeout_s)
        return classify(int(response.status_code), "")

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, EmailConfig)
        return await self._runner.send(lambda: self._send(config.to_addresses, message, timeout_s), timeout_s)


class SmtpSender:
    """SMTP from ``MONITORS_SMTP_URL``: ``smtp://[user:password@]host[:port][?starttls=true]`` or ``smtps://``."""

    def __init__(self, url: str, sender: str, runner: BlockingRunner | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("MONITORS_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        self._tls = parts.scheme == "smtps"
        self._starttls = parse_qs(parts.query).get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        self._host = parts.hostname
        self._port = parts.port or (465 if self._tls else 25)
        self._user = unquote(parts.username or "")
        self._password = unquote(parts.password or "")
        self._from = sender
        self._runner = runner or BlockingRunner(name="notify-smtp")

    def _send(self, to: tuple[str, ...], message: Message, timeout_s: float) -> SendResult:
        try:
            mail = email_message(self._from, to, message)
        except ValueError as error:
            return unsendable(error)
        # Not connected yet (no host given), so the deadline below covers the greeting too.
        server: smtplib.SMTP = (
            smtplib.SMTP_SSL(timeout=timeout_s, context=ssl.create_default_context())
            if self._tls
            else smtplib.SMTP(timeout=timeout_s)
        )
        # smtplib's timeout is per socket operation: a server answering a byte at a time would keep this thread
        # for ever. At the deadline the socket is shut down under it, which ends any read or write at once.
        expired = threading.Event()
        deadline = threading.Timer(timeout_s, _cut, (server, expired))
        deadline.daemon = True
        deadline.start()
        try:
            code, greeting = server.connect(self._host, self._port)
            if code != 220:
                server.close()
                raise smtplib.SMTPConnectError(code, greeting)
            with server:
                if self._starttls:
                    server.starttls(context=ssl.create_default_context())
                if self._user:
                    server.login(self._user, self._password)
                refused = server.send_message(mail)
        except smtplib.SMTPRecipientsRefused as error:
            code, text = next(iter(error.recipients.values()))
            return _smtp_result(code, text)
        except smtplib.SMTPResponseException as error:
            return _smtp_result(error.smtp_code, error.smtp_error)
        except (OSError, smtplib.SMTPException) as error:
            server.close()
            # Cut at the deadline: the error is the broken connection, the cause the timeout.
            return failure(TimeoutError() if expired.is_set() else error, timeout_s)
        finally:
            deadline.cancel()
        if refused:
            code, text = next(iter(refused.values()))
            return _smtp_result(code, text)
        return SendResult(Outcome.SUCCESS, 250, "accepted")

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, EmailConfig)
        return await self._runner.send(lambda: self._send(config.to_addresses, message, timeout_s), timeout_s)


def _cut(server: smtplib.SMTP, expired: threading.Event) -> None:
    expired.set()
    sock = server.sock
    if sock is None:  # still in SMTP_SSL's TLS handshake: bounded by the per-operation timeout only
        return
    with contextlib.suppress(OSError):  # closed already, or detached by STARTTLS's wrapping
        sock.shutdown(socket.SHUT_RDWR)


def _smtp_result(code: int, text: bytes | str) -> SendResult:
    detail = f"SMTP {code}: {text.decode(errors='replace') if isinstance(text, bytes) else text}"[:300]
    # 4xx replies are transient by definition (RFC 5321 4.2.1); 5xx are permanent.
    return SendResult(Outcome.RETRYABLE if 400 <= code < 500 else Outcome.PERMANENT, code, detail)


class OutboxSender:
    """Appends each email to ``outbox.txt`` in the data directory and, with ``log_each``, logs where (embedded
    mode: the person running it reads their login code there). In production a start-up warning says it once."""

    def __init__(self, path: Path, sender: str, runner: BlockingRunner | None = None, *, log_each: bool = True) -> None:
        self.path = path
        self._from = sender
        self._runner = runner or BlockingRunner(name="notify-outbox")
        self._log_each = log_each

    def _append(self, to: tuple[str, ...], message: Message) -> None:
        mail = email_message(self._from, to, message)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = mail.get_body(("plain",))
        body = text.get_content() if text is not None else message.body
        # Login codes land here: readable by this user only.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as outbox:
            outbox.write(f"From: {mail['From']}\nTo: {mail['To']}\nDate: {mail['Date']}\nSubject: {mail['Subject']}\n")
            outbox.write(f"\n{body.rstrip()}\n\n{'-' * 72}\n")

    async def send(self, config: ChannelConfig, message: Message, delivery_id: str, timeout_s: float) -> SendResult:
        assert isinstance(config, EmailConfig)
        try:
            await self._runner.run(lambda: self._append(config.to_addresses, message), timeout_s + 1.0)
        except Busy:
            return BUSY
        except ValueError as error:
            return unsendable(error)
        except OSError as error:  # a full disk, a lost directory, a hung file system (TimeoutError): may pass
            return failure(error, timeout_s)
        written = SendResult(Outcome.SUCCESS, 0, f"written to {self.path}")
        if not self._log_each:
            return written
        log.info(
            "no email provider configured: email written to the local outbox",
            extra={
                "outbox": str(self.path),
                "to": ", ".join(mask_address(a) for a in config.to_addresses),
                "subject": message.title,
                "delivery_id": delivery_id,
            },
        )
        return written
