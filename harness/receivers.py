"""Real HTTP receivers on loopback standing in for the public endpoints notifications go to.

Each route speaks its provider's documented request and response format, so a sender that builds the wrong
payload gets the provider's error, not a silent 200:

- Slack incoming webhook (``/slack/...``): 200 ``ok``; 400 ``invalid_payload`` without text or blocks.
- Discord webhook (``/discord/...``): 204; 400 JSON error without content or embeds.
- Teams Workflows webhook (``/teams/...``): 202; 400 unless a message with an Adaptive Card attachment.
- Generic webhook (``/webhook/...``): 200 (the test checks the signature).
- PagerDuty Events API v2 (``/pagerduty/v2/enqueue``): 202 ``{"status": "success", "dedup_key": ...}``; 400
  ``{"status": "invalid event", ...}`` for a bad routing key, action or payload.
- SendGrid v3 (``/v3/mail/send`` on the plain-HTTP server, for ``SendGridAPIClient(host=...)``): 202 empty;
  401 for a wrong API key; 400 for a malformed mail.

:meth:`ProviderReceivers.script` queues replies (429 with Retry-After, 5xx, 404...) a path gives before its
normal answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.http import HttpServer, Reply, self_signed_certificate

SENDGRID_KEY = "SG.test-key.receiver"
PAGERDUTY_PATH = "/pagerduty/v2/enqueue"
SENDGRID_PATH = "/v3/mail/send"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    time: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def _slack(body: Any) -> Reply:
    if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
        return Reply(400, b"invalid_payload")
    return Reply(200, b"ok")


def _discord(body: Any) -> Reply:
    if not isinstance(body, dict) or not (body.get("content") or body.get("embeds")):
        return Reply.json({"message": "Cannot send an empty message", "code": 50006}, 400)
    return Reply(204, b"")


def _teams(body: Any) -> Reply:
    attachments = body.get("attachments") if isinstance(body, dict) else None
    ok = (
        body.get("type") == "message"
        and attachments
        and all(
            a.get("contentType") == "application/vnd.microsoft.card.adaptive" and a["content"]["type"] == "AdaptiveCard"
            for a in attachments
        )
    )
    return Reply(202, b"") if ok else Reply.json({"error": {"code": "InvalidRequestContent"}}, 400)


def _pagerduty(body: Any) -> Reply:
    errors = []
    if not isinstance(body, dict):
        errors.append("Event object is invalid")
        body = {}
    if len(str(body.get("routing_key", ""))) != 32:
        errors.append("'routing_key' is invalid")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid")
    if action in ("acknowledge", "resolve") and not body.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    payload = body.get("payload") or {}
    if action == "trigger" and not all(payload.get(k) for k in ("summary", "source", "severity")):
        errors.append("'payload' needs summary, source and severity")
    if errors:
        return Reply.json({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400)
    return Reply.json({"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}, 202)


def _sendgrid(headers: dict[str, str], body: Any) -> Reply:
    if headers.get("authorization") != f"Bearer {SENDGRID_KEY}":
        message = "The provided authorization grant is invalid, expired, or revoked"
        return Reply.json({"errors": [{"message": message, "field": None, "help": None}]}, 401)
    ok = (
        isinstance(body, dict)
        and body.get("personalizations")
        and body.get("from", {}).get("email")
        and body.get("subject")
        and body.get("content")
    )
    if not ok:
        return Reply.json({"errors": [{"message": "Bad Request", "field": None, "help": None}]}, 400)
    return Reply(202, b"")


def _webhook(body: Any) -> Reply:
    return Reply(200, b"received")


_KINDS: dict[str, Callable[[Any], Reply]] = {"slack": _slack, "discord": _discord, "teams": _teams, "webhook": _webhook}


class ProviderReceivers:
    """An HTTPS server (self-signed; point MONITORS_CA_FILE at :attr:`ca_file`) for the webhook providers and
    a plain-HTTP one for SendGrid. Records every request; replays scripted replies first."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file, key = self_signed_certificate(directory)
        self.tls = HttpServer((self.ca_file, key))
        self.plain = HttpServer()
        self._lock = threading.Lock()
        self._received: dict[str, list[Received]] = defaultdict(list)
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._holds: dict[str, threading.Event] = {}
        self.plain.routes[SENDGRID_PATH] = lambda path, headers, body: self._answer(path, headers, body)

    def url(self, kind: str, name: str = "hook") -> str:
        """The URL of a receiver route: ``url("slack", "team-a")`` -> https://127.0.0.1:port/slack/team-a."""
        path = PAGERDUTY_PATH if kind == "pagerduty" else f"/{kind}/{name}"
        self.tls.routes[path] = lambda full, headers, body: self._answer(full, headers, body)
        return self.tls.url(path)

    @property
    def sendgrid_host(self) -> str:
        return self.plain.url("").rstrip("/")

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, in order, before the normal answer."""
        with self._lock:
            self._scripts[path].extend(replies)

    def hold(self, path: str) -> threading.Event:
        """Keep requests to ``path`` waiting until the returned event is set."""
        event = self._holds[path] = threading.Event()
        return event

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return list(self._received[path])

    def wait_for(self, path: str, count: int, timeout_s: float = 20.0) -> list[Received]:
        """The requests to ``path`` once there are at least ``count`` (AssertionError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.received(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(found)} requests after {timeout_s}s, expected {count}")
            time.sleep(0.02)
        return found

    async def arrival(self, path: str, count: int, timeout_s: float = 20.0) -> list[Received]:
        """:meth:`wait_for` without blocking the event loop (for senders running in the test's own loop)."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.received(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(found)} requests after {timeout_s}s, expected {count}")
            await asyncio.sleep(0.02)
        return found

    def _answer(self, full_path: str, headers: dict[str, str], body: bytes) -> Reply:
        path = full_path.split("?")[0]
        with self._lock:
            self._received[path].append(Received(path, headers, body, time.monotonic()))
            scripted = self._scripts[path].popleft() if self._scripts[path] else None
        hold = self._holds.get(path)
        if hold is not None:
            hold.wait(timeout=60)
        if scripted is not None:
            return scripted
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if path == SENDGRID_PATH:
            return _sendgrid(headers, document)
        if path == PAGERDUTY_PATH:
            return _pagerduty(document)
        return _KINDS[path.split("/")[1]](document)

    def __enter__(self) -> ProviderReceivers:
        self.tls.__enter__()
        self.plain.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for hold in self._holds.values():
            hold.set()
        self.plain.__exit__(exc_type, exc, tb)
        self.tls.__exit__(exc_type, exc, tb)
