"""The InfluxDB store through the v1-compatibility API of InfluxDB 2.x / 3.x Core: token auth, no DDL.

Neither InfluxDB 2.x nor 3.x can be installed on this machine (Debian ships 1.6 only; there is no package in
the registries we reach), so a small HTTP front stands in for their compatibility layer, in front of the real
``influxd`` 1.x that does the storing and querying: it demands ``Authorization: Token <token>`` as 2.x does
(401 otherwise), refuses database and retention-policy statements as 2.x does (buckets and DBRP mappings are
made by the operator beforehand), and passes everything else through unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from harness.external import InfluxDBServer
from service_runtime.errors import Unavailable
from service_runtime.timeseries import InfluxStore, Sample, SeriesKey, open_timeseries_store
from services.monitor_svc.summaries.queries import summarize_availability

TOKEN = "v2-operator-token"
KEY = SeriesKey("usr_v2", "mon_v2")


class CompatFront:
    """The 2.x-style front described in the module docstring; ``requests`` records (method, path, q)."""

    def __init__(self, backend: str) -> None:
        self.requests: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                url = httpx.URL(self.path)
                query = dict(url.params)
                if self.command == "POST" and url.path == "/query" and body:
                    query.update(dict(httpx.QueryParams(body.decode())))
                outer.requests.append((self.command, url.path, query.get("q", "")))
                if self.headers.get("authorization") != f"Token {TOKEN}":
                    self._reply(401, b'{"code":"unauthorized","message":"unauthorized access"}')
                    return
                statement = query.get("q", "").upper()
                if "CREATE DATABASE" in statement or "RETENTION POLICY" in statement:
                    self._reply(200, b'{"results":[{"statement_id":0,"error":"not implemented"}]}')
                    return
                forwarded = httpx.request(
                    self.command,
                    backend + self.path,
                    content=body,
                    headers={"content-type": self.headers.get("content-type", "")},
                    timeout=10,
                )
                self._reply(forwarded.status_code, forwarded.content, forwarded.headers.get("content-type", ""))

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def front(influxdb: InfluxDBServer) -> Iterator[CompatFront]:
    # What the operator of a 2.x deployment does beforehand: the bucket, and DBRP mappings for both policies.
    for statement in (
        'CREATE DATABASE "bucket_v2"',
        'CREATE RETENTION POLICY "monitors_raw" ON "bucket_v2" DURATION 30d REPLICATION 1 DEFAULT',
        'CREATE RETENTION POLICY "monitors_rollup" ON "bucket_v2" DURATION 400d REPLICATION 1',
    ):
        httpx.post(f"{influxdb.url}/query", data={"q": statement}, timeout=10).raise_for_status()
    started = CompatFront(influxdb.url)
    yield started
    started.close()


async def test_writes_queries_and_rollups_through_the_compatibility_api_with_a_token(front: CompatFront) -> None:
    store = await open_timeseries_store(f"influxdb://127.0.0.1:{front.port}/bucket_v2?token={TOKEN}")
    assert isinstance(store, InfluxStore)
    try:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        samples = [
            Sample(KEY.owner_id, KEY.monitor_id, start + timedelta(minutes=10 * i), {"is_up": float(i % 4 != 0)})
            for i in range(18)
        ]
        await store.write(samples)
        await store.flush()
        assert store.dropped == 0
        points = await store.points(KEY, "is_up", start, start + timedelta(hours=4), 100)
        assert [p.value for p in points] == [s.fields["is_up"] for s in samples]
        summary = await summarize_availability(store, KEY, start, start + timedelta(hours=3))
        assert (summary.checks, summary.failed_checks) == (18, 5)
        assert await store.roll_up(start - timedelta(hours=1), start + timedelta(hours=5)) > 0
        counts = await store.uptime_counts_many(
            KEY.owner_id, [KEY.monitor_id], start - timedelta(hours=1), start + timedelta(hours=5)
        )
        assert counts[KEY.monitor_id].checks == 18
    finally:
        await store.close()
    # The DDL the store tried on start was refused, as 2.x refuses it, and the store carried on.
    assert any("CREATE DATABASE" in q for _, _, q in front.requests)


async def test_without_the_token_reads_fail_clearly(front: CompatFront) -> None:
    store = await open_timeseries_store(f"influxdb://127.0.0.1:{front.port}/bucket_v2")
    try:
        with pytest.raises(Unavailable, match="HTTP 401"):
            await store.points(KEY, "is_up", datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC), 10)
    finally:
        await store.close()
