"""The harness's throwaway servers are real and usable: each answers its own protocol."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request

from tests.harness.external import InfluxDBServer, MariaDBServer, RedisServer


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
    status, _ = post("/write", {"db": "harness", "precision": "s"}, b"check,monitor=m1 is_up=1i,ms=12.5 1700000000")
    assert status == 204
    _, body = post("/query", {"db": "harness", "q": "SELECT ms FROM check WHERE monitor = 'm1'"})
    series = json.loads(body)["results"][0]["series"][0]
    assert series["values"] == [["2023-11-14T22:13:20Z", 12.5]]
