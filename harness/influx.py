"""Samples to write to a real InfluxDB and InfluxQL to read back what it stored."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import datetime, timedelta

from harness.external import InfluxDBServer
from service_runtime.timeseries import Sample


def samples(start: datetime, count: int, monitor_id: str = "mon_1") -> list[Sample]:
    return [
        Sample("usr_a", monitor_id, start + timedelta(seconds=i), {"is_up": 1.0, "n": float(i)}) for i in range(count)
    ]


def influxql(server: InfluxDBServer, q: str, method: str = "GET") -> list[list[object]]:
    data = urllib.parse.urlencode({"q": q}).encode()
    request = (
        urllib.request.Request(f"{server.url}/query", data=data, method="POST")
        if method == "POST"
        else urllib.request.Request(f"{server.url}/query?{data.decode()}")
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        result = json.loads(reply.read())["results"][0]
    return [row for series in result.get("series", []) for row in series["values"]]


def stored_values(server: InfluxDBServer, database: str, monitor_id: str = "mon_1") -> list[float]:
    rows = influxql(server, f'SELECT n FROM "{database}"."monitors_raw"."check" WHERE monitor = \'{monitor_id}\'')
    return [float(str(row[1])) for row in rows]
