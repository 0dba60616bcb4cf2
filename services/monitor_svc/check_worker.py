"""RunCheck's checks, run in a worker process so that no check's work is done on the loop that serves calls.

A check's network waits are cheap, but its CPU is not: reading a body of up to 1 MiB, decoding it, parsing
JSON and evaluating a JSON path, TLS handshakes. Run on the API server's event loop, 40 RunChecks of an 860 KB
JSON document at once took another user's GetCurrentUser from 2 ms to seconds; threads would not help, as
they hold the same interpreter lock. So the monitor service starts :class:`CheckWorkers`: worker processes
(``python -m services.monitor_svc.check_worker``), each with its own event loop and :class:`Checker`, at a
lower scheduling priority than the server. The server writes each check to a worker's stdin and reads its
outcome from the worker's stdout. Requests go as pickles (from this server to its own child); outcomes come
back as JSON, since a worker reads untrusted bodies and must not be able to make the server run anything.

How many checks run at once is bounded twice: per user by :class:`services.monitor_svc.monitors.Monitors`,
and here in all (``max_in_flight``), both answered RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from service_runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable
from service_runtime.logs import configure_logging
from services.monitor_svc.checks import CheckConfig, Checker, Outcome
from services.monitor_svc.domain import Spec

log = logging.getLogger("monitors.check_worker")
_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 16 * 1024 * 1024  # a spec is bounded far below this; an outcome's message to 500 characters
# A worker answers within a check's timeout and a little cleanup; past this margin it is taken for stuck.
ANSWER_MARGIN_S = 5.0
WORKER_NICENESS = 5  # the server's calls come before checks when both want the CPU


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes")
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


@dataclass
class _Worker:
    process: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and self.reader is not None and not self.reader.done()


class CheckWorkers:
    """Runs checks in ``processes`` worker processes, at most ``max_in_flight`` at once; the same ``run`` as
    :class:`Checker`. A worker that exits is replaced on the next check; the checks it held fail UNAVAILABLE."""

    def __init__(
        self,
        config: CheckConfig,
        processes: int = 1,
        max_in_flight: int = 64,
        log_level: str = "WARNING",
        log_format: str = "json",
    ) -> None:
        self._config = config
        self._slots: list[_Worker | None] = [None] * processes
        self._max_in_flight = max_in_flight
        self._log = (log_level, log_format)
        self._ids = itertools.count()
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return sum(len(w.pending) for w in self._slots if w is not None)

    async def start(self) -> None:
        """Start every worker now, so that the first RunCheck does not wait for a process to start."""
        for slot in range(len(self._slots)):
            await self._worker(slot)

    async def _worker(self, slot: int) -> _Worker:
        async with self._starting:
            worker = self._slots[slot]
            if worker is not None and worker.alive:
                return worker
            if self._closed:
                raise Unavailable("the server is stopping")
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.monitor_svc.check_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            worker = _Worker(process)
            assert process.stdin is not None
            process.stdin.write(_frame(pickle.dumps((self._config, self._log))))
            worker.reader = asyncio.create_task(self._read_answers(worker))
            self._slots[slot] = worker
            return worker

    async def _read_answers(self, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        try:
            while (payload := await _read_frame(worker.process.stdout)) is not None:
                answer = json.loads(payload)
                future = worker.pending.pop(answer["id"], None)
                if future is not None and not future.done():
                    future.set_result(answer)
        except (ValueError, KeyError, TypeError) as error:  # a worker that says nonsense is not trusted further
            log.error("check worker answered garbage; stopping it", extra={"error": str(error)[:200]})
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
        finally:
            for future in worker.pending.values():
                if not future.done():
                    future.set_exception(Unavailable("the check worker stopped during the check; run it again"))
            worker.pending.clear()

    async def run(self, spec: Spec, timeout_s: float, secrets: Mapping[str, str] | None = None) -> Outcome:
        """One check of ``spec`` in a worker, never longer than ``timeout_s`` (plus a margin)."""
        if self.in_flight >= self._max_in_flight:
            raise ResourceExhausted(
                "run_checks_in_flight",
                f"{self._max_in_flight} checks are running on this server, the most at once; retry in a few seconds",
            )
        live = [(len(w.pending), slot) for slot, w in enumerate(self._slots) if w is not None and w.alive]
        worker = await self._worker(min(live)[1] if live else 0)
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        worker.pending[request_id] = future
        try:
            assert worker.process.stdin is not None
            worker.process.stdin.write(
                _frame(pickle.dumps(("check", request_id, spec, timeout_s, dict(secrets or {}))))
            )
            async with asyncio.timeout(timeout_s + ANSWER_MARGIN_S):
                await worker.process.stdin.drain()
                answer = await future
        except TimeoutError:
            self._cancel(worker, request_id)
            raise Unavailable("the check worker did not answer in time; run the check again") from None
        except asyncio.CancelledError:
            # The caller went away (a deadline, a cancelled call): the check stops too, so that a user's limit
            # holds for the checks really running, not only for the calls still waiting.
            self._cancel(worker, request_id)
            raise
        except (ConnectionError, BrokenPipeError):
            raise Unavailable("the check worker stopped; run the check again") from None
        finally:
            worker.pending.pop(request_id, None)
        if "outcome" in answer:
            return Outcome(**answer["outcome"])
        if answer.get("failed_precondition"):
            raise FailedPrecondition(answer["failed_precondition"])
        raise RuntimeError(f"check crashed in the worker: {answer.get('crash', '')}")

    @staticmethod
    def _cancel(worker: _Worker, request_id: int) -> None:
        stdin = worker.process.stdin
        if worker.alive and stdin is not None and not stdin.is_closing():
            stdin.write(_frame(pickle.dumps(("cancel", request_id))))

    async def close(self) -> None:
        """Stop the workers (their checks fail UNAVAILABLE)."""
        self._closed = True
        for worker in self._slots:
            if worker is None:
                continue
            if worker.process.stdin is not None:
                worker.process.stdin.close()
            try:
                await asyncio.wait_for(worker.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                await worker.reader


async def _check(
    checker: Checker, writer: asyncio.WriteTransport, request_id: int, spec: Spec, timeout_s: float, secrets: Any
) -> None:
    answer: dict[str, Any] = {"id": request_id}
    try:
        answer["outcome"] = asdict(await checker.run(spec, timeout_s, secrets))
    except FailedPrecondition as error:
        answer["failed_precondition"] = str(error)
    except Exception as error:  # the server decides what a crash means; this worker goes on
        log.exception("check crashed")
        answer["crash"] = type(error).__name__
    writer.write(_frame(json.dumps(answer).encode()))


def _forget(running: dict[int, asyncio.Task[None]], request_id: int, task: asyncio.Task[None]) -> None:
    running.pop(request_id, None)


async def serve() -> None:
    """The worker: checks from stdin, outcomes to stdout, until stdin closes (the server stopped or died)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    # The answers get stdout's descriptor for themselves; anything printed goes to stderr instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    writer, _ = await loop.connect_write_pipe(asyncio.Protocol, answers)
    first = await _read_frame(reader)
    if first is None:
        return
    # Ctrl-C in a terminal reaches the whole process group: the worker ends when the server closes its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config, (level, fmt) = pickle.loads(first)
    configure_logging(level, fmt)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    checker = Checker(config)
    running: dict[int, asyncio.Task[None]] = {}
    try:
        while (payload := await _read_frame(reader)) is not None:
            match pickle.loads(payload):
                case ("check", int(request_id), spec, timeout_s, secrets):
                    task = asyncio.create_task(_check(checker, writer, request_id, spec, timeout_s, secrets))
                    running[request_id] = task
                    task.add_done_callback(functools.partial(_forget, running, request_id))
                case ("cancel", int(request_id)):
                    if (cancelled := running.get(request_id)) is not None:
                        cancelled.cancel()
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        await checker.close()
        writer.close()


if __name__ == "__main__":
    asyncio.run(serve())
