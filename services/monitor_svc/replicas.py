"""Monitor-service replicas kept in step through Redis, the database staying the truth.

Any replica takes any runner's stream and any user's call. What one replica does, the others learn from two
things in Redis, both scoped to the deployment (its database), so deployments sharing a Redis stay apart:

- A stream of notices (``XADD`` with a cap, read with a blocking ``XREAD`` from where each replica joined): a
  monitor changed (its id: readers load it from the database, so two notices of one monitor crossing on their
  way still leave each replica with the latest); results recorded (their samples, for the event feed, and the
  monitors' ids: readers load those statuses from the database); a replica's runners changed (readers look at
  the registry at once rather than at its next round). A replica skips its own notices: it applied them as
  it made them. A stream, not pub/sub: a reader that lost its connection for a moment reads on from where
  it stopped, and misses nothing.
- The runner registry: each replica's connected runners under a key of its own that expires unless renewed
  (every :data:`REFRESH_S`, and at once when one connects or leaves). A replica killed with ``kill -9`` leaves
  its entry for :data:`ENTRY_TTL_S` at most; its runners reconnect to another replica meanwhile, where their
  new connection counts.

Redis out of reach (or slow) costs the replicas their fan-out, never a call nor its time: notices wait in a
bounded outbox that one task sends from, in order, in pipelines. A replica that had to drop notices (Redis out of
reach, the outbox full) sends a resync notice once Redis answers again, and every replica that gets one, or
that itself could not read the stream for a while and finds notices gone, reloads what it mirrors from the
database: the assignment, the event feed's monitors and states, the watched users' statuses. (Samples recorded
meanwhile on another replica are in the time-series store, not replayed to this one's event subscribers.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from service_runtime.cache import describe_redis_url
from service_runtime.timeseries import Sample
from services.monitor_svc.assignments import AssignmentHub, RemoteRunner

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often a replica renews its registry entry and reads the others'
ENTRY_TTL_S = 5.0  # a registry entry not renewed for this long is gone (its replica died)
STREAM_MAXLEN = 10_000  # notices kept (approximately): minutes of a busy deployment's reports, each up to a batch
# of samples (a runner reporting 100 results a second sends one of about 15 kB a second: 10,000 are 150 MB)
READ_BLOCK_MS = 1_000
READ_COUNT = 500
TIMEOUT_S = 2.0  # every Redis command but the blocking read, which waits READ_BLOCK_MS more
OUTBOX = 10_000  # notices waiting to be sent; beyond, they are dropped and the others told to resync
SEND_BATCH = 500  # notices sent in one pipeline

CHANGE, RECORDED, RUNNERS, RESYNC = "change", "recorded", "runners", "resync"


def deployment_key(database_url: str) -> str:
    """The Redis key prefix of one deployment's replicas: its database (credentials left out), hashed."""
    url = make_url(database_url).set(username=None, password=None).render_as_string(hide_password=False)
    return "monitors:replicas:" + hashlib.sha256(url.encode()).hexdigest()[:16]


def replica_name() -> str:
    """This replica's name in the registry: host, process and a random part (a restarted pod is a new one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _sample_to_json(sample: Sample) -> dict[str, Any]:
    return {
        "o": sample.owner_id,
        "m": sample.monitor_id,
        "t": sample.time.isoformat(),
        "f": dict(sample.fields),
        "g": dict(sample.tags),
        "n": dict(sample.notes),
    }


def _sample_from_json(data: dict[str, Any]) -> Sample:
    return Sample(data["o"], data["m"], datetime.fromisoformat(data["t"]), data["f"], data["g"], data["n"])


def _order(notice_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = notice_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class RedisReplicas:
    """This replica's side of the fan-out: sends its notices and registry entry, applies the others'.

    ``changed_elsewhere(monitor_id)`` and ``recorded_elsewhere(samples, monitor_ids)`` apply another replica's
    notices here (:class:`~services.monitor_svc.monitors.Monitors` has both); ``resync()`` reloads what this
    replica mirrors after notices may have been missed."""

    def __init__(
        self,
        redis_url: str,
        database_url: str,
        hub: AssignmentHub,
        changed_elsewhere: Callable[[str], Awaitable[None]],
        recorded_elsewhere: Callable[[Sequence[Sample], Sequence[str]], Awaitable[None]],
        resync: Callable[[], Awaitable[None]],
        name: str | None = None,
    ) -> None:
        self.name = name or replica_name()
        # Any: redis-py's stubs type replies as bytes | str whatever decode_responses says.
        self._redis: Any = aioredis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        # The blocking read has a connection of its own, whose timeout outlasts the block.
        self._reader: Any = aioredis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=TIMEOUT_S + READ_BLOCK_MS / 1000,
            socket_connect_timeout=TIMEOUT_S,
        )
        self._where = describe_redis_url(redis_url)
        prefix = deployment_key(database_url)
        self._stream = f"{prefix}:notices"
        self._members = f"{prefix}:members"
        self._entry_prefix = f"{prefix}:runners:"
        self._hub = hub
        self._changed_elsewhere = changed_elsewhere
        self._recorded_elsewhere = recorded_elsewhere
        self._resync = resync
        self._position: str | None = None  # the last notice read
        self._failing = False
        self._outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue(OUTBOX)
        self._dropped = False  # notices lost since the last resync notice
        self._sending = False  # a batch on its way to Redis
        self._joining = False  # this replica's entry was just added to the registry: skip reading it this round
        self.applied = 0  # others' notices applied here (for tests and metrics)

    # --- sending -------------------------------------------------------------------------------------

    def _send(self, fields: dict[str, str]) -> None:
        try:
            self._outbox.put_nowait({"r": self.name, **fields})
        except asyncio.QueueFull:
            self._dropped = True  # the others resync once the outbox drains

    async def send_forever(self) -> None:
        """Send the outbox's notices in order, as they come, until cancelled."""
        while True:
            batch = []
            if self._dropped:  # the resync notice goes once Redis answers, with or without others
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REFRESH_S):
                        batch.append(await self._outbox.get())
            else:
                batch.append(await self._outbox.get())
            while len(batch) < SEND_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            if self._dropped:
                batch.append({"r": self.name, "k": RESYNC})
            self._sending = True
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for fields in batch:
                        pipe.xadd(self._stream, fields, maxlen=STREAM_MAXLEN, approximate=True)
                    await pipe.execute()
            except RedisError as error:
                self._report_failure("cannot tell the other replicas", error)
                self._dropped = True  # these are lost: once Redis answers, the others reload instead
                await asyncio.sleep(REFRESH_S)
                continue
            finally:
                self._sending = False
            if batch[-1].get("k") == RESYNC:
                self._dropped = False
                log.warning("Redis answers again: the other replicas told to reload what they mirror")

    def outbox_empty(self) -> bool:
        """Whether every notice made so far has been handed to Redis (or dropped)."""
        return self._outbox.empty() and not self._sending

    async def monitor_changed(self, monitor_id: str) -> None:
        """Tell the other replicas that this monitor changed (they load it)."""
        self._send({"k": CHANGE, "id": monitor_id})

    async def results_recorded(self, samples: Sequence[Sample], monitor_ids: Sequence[str]) -> None:
        """Tell the other replicas these results were recorded and these monitors' statuses stored."""
        payload = {"s": [_sample_to_json(s) for s in samples], "ids": list(monitor_ids)}
        self._send({"k": RECORDED, "d": json.dumps(payload, separators=(",", ":"))})

    async def local_runners_changed(self) -> None:
        """A runner connected to this replica or left it: renew the entry and have the others read it now."""
        if await self._write_entry():
            self._send({"k": RUNNERS})

    async def _write_entry(self) -> bool:
        entry = [
            {
                "id": r.runner_id,
                "location": r.location,
                "capacity": r.capacity,
                "version": r.version,
                "connect": r.connect_time.isoformat(),
                "report": r.last_report_time.isoformat() if r.last_report_time else None,
                "dedicated": r.dedicated_to,
            }
            for r in self._hub.local_runners()
        ]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._entry_prefix + self.name, json.dumps(entry), px=int(ENTRY_TTL_S * 1000))
                pipe.sadd(self._members, self.name)
                _, added = await pipe.execute()
        except RedisError as error:
            self._report_failure("cannot renew this replica's runners in the registry", error)
            return False
        # Not a member yet: this replica is new, or Redis lost the registry (restarted) and the others have not
        # renewed their entries yet either.
        self._joining = bool(added)
        return True

    async def _read_registry(self) -> list[RemoteRunner] | None:
        try:
            members = sorted(m for m in await self._redis.smembers(self._members) if m != self.name)
            entries = await self._redis.mget([self._entry_prefix + m for m in members]) if members else []
            gone = [m for m, entry in zip(members, entries, strict=True) if entry is None]
            if gone:
                await self._redis.srem(self._members, *gone)
        except RedisError as error:
            self._report_failure("cannot read the other replicas' runners", error)
            return None
        remote = []
        for entry in entries:
            for r in json.loads(entry) if entry else []:
                remote.append(
                    RemoteRunner(
                        r["id"],
                        r["location"],
                        r["capacity"],
                        r["version"],
                        _time(r["connect"]) or datetime.min,
                        _time(r["report"]),
                        r.get("dedicated", ""),  # absent from an entry written before dedicated runners
                    )
                )
        return remote

    async def refresh(self) -> None:
        """Renew this replica's entry and take the others' runners into the assignment."""
        await self._write_entry()
        if self._joining:
            # The others' entries may be missing for up to a round: taken at the next one, rather than each
            # replica giving every monitor to its own runners meanwhile.
            self._joining = False
            return
        remote = await self._read_registry()
        if remote is not None:
            await self._hub.set_remote_runners(remote)

    # --- reading -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the stream's end as where this replica joins (everything before is in the database) and enter
        the registry."""
        try:
            last = await self._redis.xrevrange(self._stream, count=1)
            self._position = last[0][0] if last else "0-0"
        except RedisError as error:
            self._report_failure("cannot join the other replicas", error)
        await self.refresh()

    async def run(self) -> None:
        """Apply the other replicas' notices as they come, until cancelled."""
        while True:
            try:
                if self._position is None:  # joined with Redis out of reach: from now on, after a reload
                    last = await self._redis.xrevrange(self._stream, count=1)
                    self._position = last[0][0] if last else "0-0"
                    await self._resync()
                found = await self._reader.xread({self._stream: self._position}, count=READ_COUNT, block=READ_BLOCK_MS)
            except RedisError as error:
                self._report_failure("cannot read the other replicas' notices", error)
                await asyncio.sleep(REFRESH_S)
                continue
            if self._failing:
                self._recovered()
                if await self._missed_some():
                    await self._resync()
            elif any(len(notices) == READ_COUNT for _, notices in found) and await self._missed_some():
                # Reading a full page: behind, maybe further than the stream keeps.
                await self._resync()
            for _, notices in found:
                for notice_id, fields in notices:
                    await self._apply(fields)
                    self._position = notice_id

    async def _missed_some(self) -> bool:
        """Whether notices after our position may have been dropped (by the cap, or with a restarted Redis's
        data) before we read them: when the last one we read is gone, those after it may be too (the cap drops
        the oldest first, so while it is there, none after it is gone). A reload costs less than a notice missed."""
        if self._position in (None, "0-0"):
            return False
        try:
            found = await self._redis.xrange(self._stream, min=self._position, max=self._position)
        except RedisError:
            return True
        return not found

    async def _apply(self, fields: dict[str, str]) -> None:
        if fields.get("r") == self.name:
            return
        kind = fields.get("k")
        try:
            if kind == CHANGE:
                await self._changed_elsewhere(fields["id"])
            elif kind == RECORDED:
                payload = json.loads(fields["d"])
                await self._recorded_elsewhere([_sample_from_json(s) for s in payload["s"]], payload["ids"])
            elif kind == RUNNERS:
                remote = await self._read_registry()
                if remote is not None:
                    await self._hub.set_remote_runners(remote)
            elif kind == RESYNC:
                log.warning("another replica lost notices while Redis was out of reach: reloading what this mirrors")
                await self._resync()
            self.applied += 1
        except Exception:  # one notice that cannot be applied must not stop the others
            log.exception("a notice from another replica could not be applied", extra={"kind": kind})

    def _report_failure(self, what: str, error: RedisError) -> None:
        if not self._failing:  # one line per outage, not one per call
            log.warning(f"Redis does not answer: {what}", extra={"redis": self._where, "error": str(error)})
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.warning("Redis answers again: replicas in step", extra={"redis": self._where})
            self._failing = False

    async def close(self) -> None:
        """Send what the outbox holds, leave the registry (the others take over this replica's runners' monitors
        at once) and disconnect."""
        leaving = [self._outbox.get_nowait() for _ in range(self._outbox.qsize())]
        leaving.append({"r": self.name, "k": RUNNERS})
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await self._redis.delete(self._entry_prefix + self.name)
                await self._redis.srem(self._members, self.name)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for fields in leaving:
                        pipe.xadd(self._stream, fields, maxlen=STREAM_MAXLEN, approximate=True)
                    await pipe.execute()
        except (RedisError, TimeoutError):
            pass  # the entry expires on its own
        await self._redis.aclose()
        await self._reader.aclose()
