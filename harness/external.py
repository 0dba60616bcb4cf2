"""Throwaway real servers on free loopback ports: mariadbd, redis-server and influxd 1.x.

Each is a context manager that starts the server in its own temp directory, waits until it answers, and
stops it (SIGTERM, then SIGKILL) on exit. Binaries come from the Debian packages mariadb-server,
redis-server and influxdb, which `make test` installs when missing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pymysql

from harness import dying_with_parent
from harness.services import REPO, free_port

STOP_TIMEOUT_S = 20.0
# mariadb-install-db's result, made once per machine (see MariaDBServer).
TEMPLATE_CACHE = REPO / ".cache" / "mariadb-template"


def find_binary(name: str) -> str:
    """The path of a server binary; Debian puts daemons in /usr/sbin, which may not be on PATH."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: run `make test` (or scripts/ensure-system-packages.sh) to install it")
    return found


class ExternalServer:
    """A server process with its own directory and log, ready when ``probe`` succeeds."""

    name = "server"
    start_timeout_s = 60.0

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self.log_path = base_dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running server's process id (benchmarks read its CPU time), None when it is not running."""
        return None if self._process is None else self._process.pid

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def probe(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the data directory and configuration before the first start."""

    def environment(self) -> dict[str, str] | None:
        """The server's environment: the test process's own (None) unless a server needs otherwise."""
        return None

    def start(self) -> None:
        self.prepare()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                dying_with_parent(self.command()),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.environment(),
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {self.start_timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return self.probe()
        except (OSError, pymysql.err.Error):
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MariaDBServer(ExternalServer):
    """mariadbd with a user ``monitors`` (password ``monitors``) allowed everything, over TCP.

    ``mariadb-install-db`` is slow (seconds), so its result is kept once per machine in ``template_cache``
    and copied for each run.
    """

    name = "mariadb"
    user = "monitors"
    password = "monitors"

    def __init__(self, base_dir: Path, template_cache: Path) -> None:
        super().__init__(base_dir)
        self.template_cache = template_cache
        self.data_dir = base_dir / "data"

    def prepare(self) -> None:
        ensure_mariadb_template(self.template_cache)
        if not self.data_dir.exists():  # started again after a stop: the same data
            shutil.copytree(self.template_cache / "data", self.data_dir, symlinks=True)
        (self.base_dir / "init.sql").write_text(
            f"CREATE USER IF NOT EXISTS '{self.user}'@'%' IDENTIFIED BY '{self.password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'%' WITH GRANT OPTION;\n"
        )

    def command(self) -> Sequence[str]:
        run_as = ["--user=root"] if os.geteuid() == 0 else []
        return [
            find_binary("mariadbd"),
            "--no-defaults",
            *run_as,
            f"--datadir={self.data_dir}",
            f"--socket={self.base_dir / 'mariadb.sock'}",
            f"--pid-file={self.base_dir / 'mariadb.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--init-file={self.base_dir / 'init.sql'}",
            "--skip-log-bin",
            "--performance-schema=OFF",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=500",
        ]

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            connect_timeout=2,
            autocommit=True,
        )

    def probe(self) -> bool:
        self.connect().close()
        return True

    def create_database(self, name: str) -> str:
        """Creates an empty database and returns its URL for MONITORS_DATABASE_URL."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        finally:
            connection.close()
        return f"mysql+pymysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"


def ensure_mariadb_template(cache: Path) -> None:
    """Runs mariadb-install-db once into ``cache`` (under a lock, so parallel runs make it once)."""
    if (cache / "ready").exists():
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (cache.parent / f"{cache.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache / "ready").exists():
            return
        shutil.rmtree(cache, ignore_errors=True)
        building = cache.with_name(cache.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        run_as = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                find_binary("mariadb-install-db"),
                "--no-defaults",
                *run_as,
                f"--datadir={building / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (building / "ready").write_text("made by harness/external.py\n")
        building.rename(cache)


class RedisServer(ExternalServer):
    """redis-server keeping nothing on disk."""

    name = "redis"

    def environment(self) -> dict[str, str]:
        # Under a shifted clock (the suite run with Debian's faketime, which preloads libfaketime), redis-server's
        # allocator asks for the time before libfaketime is ready and it never starts. Redis only counts TTLs
        # from its own now, so it keeps the real clock; everything else runs on the shifted one.
        return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKETIME")}

    def command(self) -> Sequence[str]:
        return [
            find_binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base_dir),
            "--daemonize",
            "no",
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def probe(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")


class InfluxDBServer(ExternalServer):
    """influxd 1.x with its meta, data and WAL in temp directories; ready when GET /ping answers 204."""

    name = "influxdb"

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.rpc_port = free_port()
        self.config_path = base_dir / "influxdb.conf"

    def prepare(self) -> None:
        d = self.base_dir
        self.config_path.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            "[meta]\n"
            f'  dir = "{d / "meta"}"\n'
            "[data]\n"
            f'  dir = "{d / "data"}"\n'
            f'  wal-dir = "{d / "wal"}"\n'
            "  query-log-enabled = false\n"
            "[http]\n"
            f'  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"
        )

    def command(self) -> Sequence[str]:
        return [find_binary("influxd"), "-config", str(self.config_path)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as reply:
                return int(reply.status) == 204
        except urllib.error.URLError:
            return False


def production_env(mariadb: MariaDBServer, redis: RedisServer, influxdb: InfluxDBServer, name: str) -> dict[str, str]:
    """A stack's production settings on the session's servers: a fresh MariaDB database and InfluxDB database
    named ``name``, the Redis, a master key and each role's token."""
    # The harness's servers need nothing of ours otherwise.
    from service_runtime.secretbox import new_master_key
    from service_runtime.settings import ROLE_TOKENS

    return {
        "MONITORS_DATABASE_URL": mariadb.create_database(name),
        "MONITORS_REDIS_URL": redis.url,
        "MONITORS_TIMESERIES_URL": influxdb.url.replace("http://", "influxdb://") + f"/{name}",
        "MONITORS_MASTER_KEY": new_master_key(),
        **{variable: new_master_key() for variable, _ in ROLE_TOKENS.values()},
    }
