"""The hand-off to NotificationService: notices leave the outbox until NotificationService accepts them.

Each notice was written in the same transaction as the alert change that caused it, and carries an
idempotency key (alert id + transition + sequence), so an alert service crash or a notification outage
loses nothing and sends nothing twice. Notices that come due together for one owner, kind and set of
channels (a storm, held by the engine to the end of its group window) go out as one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import grpc

from monitors.v1 import common_pb2, notification_service_pb2, notification_service_pb2_grpc
from service_runtime.timestamps import to_duration, to_timestamp
from services.alert_svc import metrics
from services.alert_svc.domain import Notice, NoticeKind, Severity
from services.alert_svc.store import AlertStore

log = logging.getLogger(__name__)
npb = notification_service_pb2

_KINDS = {
    NoticeKind.FIRING: npb.NOTIFICATION_KIND_ALERT_FIRING,
    NoticeKind.RESOLVED: npb.NOTIFICATION_KIND_ALERT_RESOLVED,
    NoticeKind.REPEATED: npb.NOTIFICATION_KIND_ALERT_REPEATED,
    NoticeKind.ACKNOWLEDGED: npb.NOTIFICATION_KIND_ALERT_ACKNOWLEDGED,
}
_SEVERITIES = {
    Severity.INFO: common_pb2.SEVERITY_INFO,
    Severity.WARNING: common_pb2.SEVERITY_WARNING,
    Severity.CRITICAL: common_pb2.SEVERITY_CRITICAL,
}
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
# A request NotificationService will never accept (a deleted channel): retrying cannot help.
_PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
_GROUP_VERB = {
    NoticeKind.FIRING: "firing",
    NoticeKind.RESOLVED: "resolved",
    NoticeKind.REPEATED: "still firing",
    NoticeKind.ACKNOWLEDGED: "acknowledged",
}
MAX_NAMES = 20


def grouped(notices: Sequence[Notice]) -> list[list[Notice]]:
    """Notices that go out as one message: same owner, kind, channels and due time, in order."""
    groups: dict[tuple[str, NoticeKind, tuple[str, ...], datetime | None], list[Notice]] = {}
    for notice in notices:
        key = (notice.owner_id, notice.kind, notice.channel_ids, notice.next_attempt_time)
        groups.setdefault(key, []).append(notice)
    return list(groups.values())


def request_for(group: Sequence[Notice]) -> notification_service_pb2.SendNotificationRequest:
    """One SendNotification for a group: the notice itself when alone, else one summary of them all."""
    first = group[0]
    if len(group) == 1:
        key = first.idempotency_key
        notification = npb.Notification(
            kind=_KINDS[first.kind],
            severity=_SEVERITIES[first.severity],
            alert_id=first.alert_id,
            rule_id=first.rule_id,
            monitor_id=first.monitor_id,
            monitor_name=first.monitor_name,
            summary=first.summary,
            value=first.value,
            threshold=first.threshold,
            event_time=to_timestamp(first.event_time),
            duration=to_duration(first.duration),
        )
    else:
        key = "group:" + hashlib.sha256("\n".join(sorted(n.idempotency_key for n in group)).encode()).hexdigest()[:40]
        names = list(dict.fromkeys(n.monitor_name for n in group))  # in the order they fired
        shown = ", ".join(names[:MAX_NAMES]) + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")
        summary = f"{len(group)} alerts {_GROUP_VERB[first.kind]}: {shown}"
        notification = npb.Notification(
            kind=_KINDS[first.kind],
            severity=_SEVERITIES[max((n.severity for n in group), key=_RANK.__getitem__)],
            summary=summary[:2000],
            event_time=to_timestamp(max(n.event_time for n in group)),
        )
    return npb.SendNotificationRequest(
        idempotency_key=key, owner_id=first.owner_id, channel_ids=list(first.channel_ids), notification=notification
    )


class Notifier:
    """Drains the outbox into NotificationService, with retries (backoff up to five minutes)."""

    def __init__(
        self,
        store: AlertStore,
        channel: grpc.aio.Channel,
        token: str,
        timeout_s: float = 5.0,
        lease: timedelta = timedelta(seconds=60),
        batch: int = 500,
        email_of: Callable[[str], str] = lambda _owner: "",
    ) -> None:
        self._store = store
        self._stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)  # the alert service's role token
        self._timeout_s = timeout_s
        self._lease = lease
        self._batch = batch
        self.email_of = email_of  # set once the engine exists (it learns addresses from the feed)
        self._wake = asyncio.Event()
        self.sent = 0

    def wake(self) -> None:
        """New notices may be due now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                busy = await self.drain_once()
            except Exception:
                log.exception("outbox drain failed")
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.5)

    async def drain_once(self) -> bool:
        """Send what is due now; True if there was anything."""
        claimed = await self._store.claim_notices(self._batch, self._lease, datetime.now(UTC))
        if not claimed:
            return False
        await asyncio.gather(*(self._send(group) for group in grouped(claimed)))
        return True

    async def _send(self, group: list[Notice]) -> None:
        request = request_for(group)
        try:
            reply = await self._stub.SendNotification(request, metadata=self._metadata, timeout=self._timeout_s)
            if not request.channel_ids and not reply.deliveries:
                await self._email_instead(request)
        except grpc.aio.AioRpcError as error:
            if error.code() in _PERMANENT and request.channel_ids:
                # A named channel is gone (deleted since the rule was made): the owner's default channels (or
                # their address) hear it instead of nobody.
                await self._to_defaults(group, request)
            elif error.code() in _PERMANENT:
                metrics.NOTICES.labels("dropped").inc(len(group))
                log.warning(
                    "notification refused; dropped",
                    extra={
                        "code": error.code().name,
                        "detail": error.details(),
                        "alert_ids": [n.alert_id for n in group],
                    },
                )
            else:
                attempts = max(n.attempts for n in group)
                later = datetime.now(UTC) + timedelta(seconds=min(300, 2 ** min(attempts, 9)))
                for notice in group:
                    await self._store.notice_retry(notice.id, later)
                metrics.NOTICES.labels("retrying").inc(len(group))
                return
        for notice in group:
            await self._store.notice_sent(notice.id)
        self.sent += len(group)
        metrics.NOTICES.labels("sent").inc(len(group))

    async def _to_defaults(
        self, group: list[Notice], request: notification_service_pb2.SendNotificationRequest
    ) -> None:
        log.warning(
            "a rule's channel is gone; sent to the owner's default channels",
            extra={"channel_ids": list(request.channel_ids), "alert_ids": [n.alert_id for n in group]},
        )
        fallback = npb.SendNotificationRequest()
        fallback.CopyFrom(request)
        fallback.idempotency_key = f"{request.idempotency_key}:defaults"
        del fallback.channel_ids[:]
        reply = await self._stub.SendNotification(fallback, metadata=self._metadata, timeout=self._timeout_s)
        if not reply.deliveries:
            await self._email_instead(fallback)

    async def _email_instead(self, request: notification_service_pb2.SendNotificationRequest) -> None:
        """The owner has no default channel: a user who only made monitors must still hear of an alert, so it
        goes to their account address (as login codes do), under its own idempotency key."""
        address = self.email_of(request.owner_id)
        if not address:
            log.warning(
                "alert reached no channel and the owner's address is unknown", extra={"owner_id": request.owner_id}
            )
            return
        emailed = npb.SendNotificationRequest(
            idempotency_key=f"{request.idempotency_key}:email",
            owner_id=request.owner_id,
            email_address=address,
            notification=request.notification,
        )
        await self._stub.SendNotification(emailed, metadata=self._metadata, timeout=self._timeout_s)
