"""The harness's throwaway servers are real and usable: each answers its own protocol."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from harness.external import InfluxDBServer, MariaDBServer, RedisServer
from harness.services import python_env


def test_mariadb_creates_isolated_databases(mariadb: MariaDBServer) -> None:
    url = mariadb.create_database("harness_check")
    assert url.endswith(f":{mariadb.port}/harness_check")
    connection = mariadb.connect("harness_check")
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))")
            cursor.execute("INSERT INTO t VALUES (1, 'ünïcode ✓')")
            cursor.execute("SELECT name FROM t WHERE id = 1")
            assert cursor.fetchone() == ("ünïcode ✓",)
            cursor.execute("SELECT VERSION()")
            (version,) = cursor.fetchone() or ("",)
            assert "MariaDB" in version
    finally:
        connection.close()


def test_redis_answers_commands(redis_server: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sock:
        sock.sendall(b"SET harness ok\r\nGET harness\r\n")
        reply = b""
        while reply.count(b"\r\n") < 3:
            reply += sock.recv(64)
    assert reply == b"+OK\r\n$2\r\nok\r\n"


def test_influxdb_writes_and_queries_line_protocol(influxdb: InfluxDBServer) -> None:
    def post(path: str, params: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        request = urllib.request.Request(f"{influxdb.url}{path}?{urllib.parse.urlencode(params)}", data=body)
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status), reply.read()

    assert post("/query", {"q": "CREATE DATABASE harness"})[0] == 200
    written = int(time.time()) - 3600  # an hour ago: inside any retention, whatever today is
    status, _ = post("/write", {"db": "harness", "precision": "s"}, b"check,monitor=m1 is_up=1i,ms=12.5 %d" % written)
    assert status == 204
    _, body = post("/query", {"db": "harness", "q": "SELECT ms FROM check WHERE monitor = 'm1'"})
    series = json.loads(body)["results"][0]["series"][0]
    assert series["values"] == [[datetime.fromtimestamp(written, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), 12.5]]


def test_servers_die_with_the_test_process_that_started_them(tmp_path: Path) -> None:
    """A test run killed with -9 leaves no server behind: the harness asks the kernel for it."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from harness.external import RedisServer\n"
        "server = RedisServer(Path(sys.argv[1]))\n"
        "server.start()\n"
        "print(server._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], env=python_env({}), stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    redis_pid = int(starter.stdout.readline())
    os.kill(redis_pid, 0)  # running
    starter.kill()
    starter.wait()
    starter.stdout.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{redis_pid}").exists() and "zombie" not in _state(redis_pid):
        assert time.monotonic() < deadline, "redis-server outlived the process that started it"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"
