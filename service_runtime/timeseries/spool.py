"""A durable spool of line protocol: the samples the InfluxDB store has accepted and InfluxDB has not yet taken,
on disk, so that a restart or a crash during an InfluxDB outage loses none of them.

Why a spool rather than answering a result only once InfluxDB has its sample: statuses, heartbeat pings and
runners' reports keep working through an outage (the store's buffer already promised that), and a runner's own
buffer is not asked to hold an outage's worth of results. The price is one fsync per accepted batch, shared by
the batches accepted while the previous one was being synced: on the 2-core test VM under load, one writer
waiting for each one-sample write made 650 writes/s (18,000 without the spool), 50 writers at once 25,800/s.

Layout: append-only segment files ``<number>.lp`` of one sample per line, each line ending in a newline, under
one directory that one process holds (an exclusive ``flock`` on ``lock``). A segment is deleted once every line
in it has been written to InfluxDB, or dropped and counted (the one being appended to is emptied instead); at
start the remaining segments are read back, oldest first. A torn last line (a crash in the middle of an append)
was never acknowledged and is skipped. A line sent twice (written, then the process died before its segment was
let go of) is harmless: InfluxDB keeps one point per series and time.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from service_runtime.errors import Unavailable
from service_runtime.settings import StartupError

log = logging.getLogger(__name__)

SUFFIX = ".lp"


class SpoolInUse(StartupError):
    """Another process holds the spool directory (the service exits 2 saying so)."""


@dataclass
class _Segment:
    path: Path
    lines: int = 0  # appended, or being appended
    released: int = 0  # of those, written or dropped
    file: BinaryIO | None = field(default=None, repr=False)


class LineSpool:
    """Segments of line protocol under ``directory``. Use :meth:`open`.

    :meth:`append` returns once the lines are on disk and, in the same order, handed to ``accepted``;
    :meth:`release` lets go of the oldest lines, in that same order.
    """

    def __init__(self, directory: Path, segment_lines: int, accepted: Callable[[list[str]], None]) -> None:
        self.directory = directory
        self.segment_lines = segment_lines
        self._accepted = accepted
        self._segments: collections.deque[_Segment] = collections.deque()
        self._appendable: _Segment | None = None  # the newest segment, while appends may go on into it
        self._next_number = 0
        self._pending: list[tuple[list[str], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._lock_file: BinaryIO | None = None

    @classmethod
    async def open(cls, directory: Path, segment_lines: int, accepted: Callable[[list[str]], None]) -> LineSpool:
        """Take the directory (:class:`SpoolInUse` when another process has it) and hand what an earlier process
        left in it to ``accepted``, oldest first."""
        spool = cls(directory, segment_lines, accepted)
        lines = await asyncio.to_thread(spool._take_and_read)
        if lines:
            accepted(lines)
        return spool

    def _take_and_read(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = (self.directory / "lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SpoolInUse(
                f"{self.directory} is in use by another process: one monitor service per data directory"
            ) from None
        self._lock_file = lock
        lines: list[str] = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            self._next_number = max(self._next_number, int(path.stem) + 1)
            text = path.read_bytes().decode()
            kept = text.split("\n")[:-1]  # the part after the last newline is a torn append, or nothing
            if kept:
                self._segments.append(_Segment(path, lines=len(kept)))
                lines.extend(kept)
            else:
                path.unlink()
        return lines

    @property
    def segments(self) -> int:
        """Segment files on disk."""
        return len(self._segments)

    async def append(self, lines: Sequence[str]) -> None:
        """Return once ``lines`` are on disk (fsync) and handed to ``accepted``; Unavailable if the disk refused
        them. Appends arriving while one is being synced are written and synced together after it."""
        if not lines:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((list(lines), done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit(), name="spool-commit")
        await done

    async def _commit(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = "".join(line + "\n" for lines, _ in batch for line in lines).encode()
            count = sum(len(lines) for lines, _ in batch)
            segment = self._appendable
            if segment is None or segment.lines >= self.segment_lines:
                segment = self._appendable = self._new_segment()
            # Counted before the write so the segment cannot be released (and deleted) while the write goes on.
            segment.lines += count
            try:
                await asyncio.to_thread(self._write, segment, data)
            except OSError as error:
                log.error("time-series spool not writable", extra={"error": repr(error), "path": str(segment.path)})
                # What reached the file may come back at the next start (harmless twice); it was never accepted.
                segment.lines -= count
                self._appendable = None
                self._close(segment)
                self._forget_released()
                failure = Unavailable(f"time-series spool not writable ({error.strerror or type(error).__name__})")
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
                continue
            for lines, done in batch:
                self._accepted(lines)
                if not done.done():  # its caller may have stopped waiting; the lines are accepted all the same
                    done.set_result(None)

    def _new_segment(self) -> _Segment:
        segment = _Segment(self.directory / f"{self._next_number:012d}{SUFFIX}")
        self._next_number += 1
        self._segments.append(segment)
        return segment

    def _write(self, segment: _Segment, data: bytes) -> None:
        created = segment.file is None
        if segment.file is None:
            segment.file = segment.path.open("ab")
        segment.file.write(data)
        segment.file.flush()
        os.fsync(segment.file.fileno())
        if created:  # the new file's name, too, must survive a crash
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def release(self, count: int) -> None:
        """The oldest ``count`` lines have been written or dropped: delete the segments nothing is left in."""
        for segment in self._segments:
            if count <= 0:
                break
            taken = min(count, segment.lines - segment.released)
            segment.released += taken
            count -= taken
        self._forget_released()

    def _forget_released(self) -> None:
        while self._segments and self._segments[0].released >= self._segments[0].lines:
            segment = self._segments[0]
            if segment is self._appendable and segment.file is not None:
                # Emptied rather than deleted: while InfluxDB keeps up, every write would otherwise make and
                # delete a file (and sync the directory). Nothing is being written to it: that would be counted.
                os.ftruncate(segment.file.fileno(), 0)
                segment.lines = segment.released = 0
                return
            self._segments.popleft()
            if segment is self._appendable:
                self._appendable = None
            self._close(segment)
            segment.path.unlink(missing_ok=True)

    @staticmethod
    def _close(segment: _Segment) -> None:
        if segment.file is not None:
            segment.file.close()
            segment.file = None

    async def close(self) -> None:
        """Close the segments (what they hold waits for the next start) and let go of the directory."""
        if self._committer is not None:
            await self._committer
        for segment in self._segments:
            self._close(segment)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
