"""The settings every service shares, read from environment variables.

Every variable is optional; the defaults give the embedded mode (SQLite under ``MONITORS_DATA_DIR``,
in-process cache, embedded time-series store, plaintext gRPC on loopback). The README lists them. A service's
own knobs are read by the service, from :attr:`Settings.env` with :func:`read_int`, :func:`read_float` and
:func:`read_choice` (the monitor service's login limits in ``accounts/login.py``, its runners' settings in
``runner/settings.py``; the notification service's email and PagerDuty settings in ``notify_svc/settings.py``).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from service_runtime.local_secrets import local_secret
from service_runtime.secretbox import SecretBox, SecretBoxError, parse_master_keys

ServiceName = Literal["monitor", "alert", "notify", "runner"]

DEFAULT_LISTEN: Mapping[ServiceName, str] = {
    "monitor": "127.0.0.1:50051",
    "alert": "127.0.0.1:50052",
    "notify": "127.0.0.1:50053",
    "runner": "127.0.0.1:50054",  # the runner's health endpoint
}
DEFAULT_PING_LISTEN = "127.0.0.1:50080"  # the monitor service's HTTP endpoint for heartbeat pings


# Between NOT_SERVING and closing the listener on SIGTERM: health checks and probes see NOT_SERVING (with 0 the
# port closed at once and they saw only connection errors), and balancers take the process out of rotation.
DEFAULT_DRAIN_DELAY_S = 3.0

# MONITORS_DATA_DIR when a production process sets none (systemd's StateDirectory=monitors).
PRODUCTION_DATA_DIR = "/var/lib/monitors"

# The services that seal secrets at rest with MONITORS_MASTER_KEY.
SEALING_SERVICES: tuple[ServiceName, ...] = ("monitor", "notify")

# Each of our processes calls the others' internal RPCs as one role, with that role's own token, and each
# internal RPC takes only the roles that need it (the services' server.py tables): a runner, which runs
# users' checks with internet egress, holds a credential that opens its two RPCs and nothing else, and
# rotating one role's token touches only the processes that present or accept it.
Role = Literal["runner", "alert", "monitor", "operator"]

# Each role's token: the variable that sets it, and its file in the data directory (embedded mode).
ROLE_TOKENS: Mapping[Role, tuple[str, str]] = {
    "runner": ("MONITORS_RUNNER_TOKEN", "runner-token"),
    "alert": ("MONITORS_ALERT_SERVICE_TOKEN", "alert-service-token"),
    "monitor": ("MONITORS_MONITOR_SERVICE_TOKEN", "monitor-service-token"),
    "operator": ("MONITORS_OPERATOR_TOKEN", "operator-token"),
}

# The role each process calls the others as.
PRESENTED_ROLE: Mapping[ServiceName, Role] = {"monitor": "monitor", "alert": "alert", "runner": "runner"}

# The role tokens a process cannot start without in production: the one it presents and those it accepts.
# The operator's is optional: without it no one has the fleet view.
NEEDED_ROLE_TOKENS: Mapping[ServiceName, tuple[Role, ...]] = {
    "monitor": ("monitor", "runner", "alert"),
    "alert": ("alert",),
    "notify": ("alert", "monitor"),
    "runner": ("runner",),
}

# Crypto price providers whose base URL MONITORS_PROVIDER_<NAME>_URL may override.
PROVIDERS = ("coinbase", "binance", "kraken", "coingecko")


def reachable(address: str) -> str:
    """A listen address as a client on this machine dials it: a wildcard host becomes the loopback."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0"):
        return f"127.0.0.1:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return address


def target_of(env: Mapping[str, str], service: ServiceName) -> str:
    """Where to reach ``service``: MONITORS_<SERVICE>_TARGET, else where it listens on this machine
    (MONITORS_<SERVICE>_LISTEN, so moving a service on one machine takes that one variable), else its default."""
    name = service.upper()
    return env.get(f"MONITORS_{name}_TARGET") or reachable(
        env.get(f"MONITORS_{name}_LISTEN") or DEFAULT_LISTEN[service]
    )


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


class StartupError(RuntimeError):
    """The process cannot start as configured or where it runs (a port in use, a database it cannot reach or
    must not share): the message says why in one line, and ``python -m services.<name>`` exits 2 with it."""


def read_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """The integer in variable ``name`` (``default`` when unset or empty); SettingsError naming it otherwise."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def read_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """The number in variable ``name`` (``default`` when unset or empty); SettingsError naming it otherwise."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _listed(names: list[str]) -> str:
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _role_tokens(env: Mapping[str, str]) -> dict[Role, tuple[str, ...]]:
    if env.get("MONITORS_SERVICE_TOKEN"):
        # Its holders could call every internal RPC; read as a fallback it would keep that power alive.
        raise SettingsError(
            "MONITORS_SERVICE_TOKEN is no longer read: each role has its own token now ("
            + ", ".join(variable for variable, _ in ROLE_TOKENS.values())
            + '); see the README, "Service identity"'
        )
    # "new,old" while a token is rotated: the first is presented, each is accepted (base64 has no comma).
    found = {
        role: tuple(t for t in env.get(variable, "").replace(" ", "").split(",") if t)
        for role, (variable, _) in ROLE_TOKENS.items()
    }
    return {role: tokens for role, tokens in found.items() if tokens}


def read_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` in variable ``name`` (``default`` when unset or empty); SettingsError naming it otherwise."""
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Settings of one service process. Build with :meth:`from_env`."""

    service: ServiceName
    listen: str
    data_dir: Path
    database_url: str
    redis_url: str
    timeseries_url: str
    monitor_target: str
    notify_target: str
    # TLS (see service_runtime/tls.py): off unless a certificate or CA is given.
    tls_cert_file: str
    tls_key_file: str
    tls_ca_file: str
    tls_client_auth: bool
    # Per-user quotas (RESOURCE_EXHAUSTED naming the limit when exceeded).
    max_monitors_per_user: int
    max_rules_per_user: int
    max_silences_per_user: int
    max_streams_per_user: int
    max_channels_per_user: int
    log_level: str
    log_format: str
    max_message_bytes: int
    shutdown_grace_s: float
    drain_delay_s: float
    rpc_timeout_s: float
    auth_cache_ttl_s: float
    raw_retention: timedelta
    rollup_retention: timedelta
    # Role tokens given by their variables (ROLE_TOKENS), the one presented first (a comma-separated list
    # while one is rotated: each is accepted); embedded, the others are kept in the data directory.
    role_tokens: Mapping[Role, tuple[str, ...]]
    master_key: str
    min_interval_s: float
    egress: str
    ca_file: str
    provider_urls: Mapping[str, str]
    ping_listen: str
    public_url: str
    # Email for notifications: SendGrid when its key is set, else SMTP when its URL is set, else a local outbox file.
    # Locations monitors may name before any runner has served them (MONITORS_LOCATIONS, comma-separated).
    declared_locations: tuple[str, ...] = ()
    metrics_listen: str = ""  # host:port of the Prometheus endpoint (/metrics); empty: none
    # Where runners run: "local" (started by someone else: make run, systemd) or "kubernetes" (the monitor service
    # scales each location's StatefulSet and starts dedicated runners through the Kubernetes API).
    runtime: str = "local"
    kubernetes_api_url: str = ""  # empty: the pod's own service account (in-cluster)
    kubernetes_namespace: str = ""  # empty: the pod's own namespace
    monitors_per_runner: int = 500
    max_runners_per_location: int = 20
    max_dedicated_per_user: int = 5  # monitors with placement DEDICATED (a pod each)
    # The variables these settings were read from: each service reads its own knobs from them.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def role_token(self, role: Role) -> str:
        """The token ``role`` presents: its variable, or embedded, the one kept in the data directory (made on
        first use, so that every process of an embedded deployment reads the same)."""
        variable, file = ROLE_TOKENS[role]
        if role in self.role_tokens:
            return self.role_tokens[role][0]
        if not self.embedded:  # check_before_serving names the variables a process needs
            raise SettingsError(f"{variable} must be set when MONITORS_DATABASE_URL is not SQLite")
        return local_secret(self.data_dir / file)

    def accepted_role_tokens(self, *method_tables: Mapping[str, Collection[Role]]) -> dict[str, Role]:
        """Token -> role for every role the tables (method -> roles that may call it) name, and this process's
        own role (known, so that its token presented here is PERMISSION_DENIED like any role's on a method not
        its own, not taken for a user's); every token of a role being rotated. In production a role whose
        variable is unset (the operator's, optional) has no token, and nobody calls as it."""
        named = (role for table in method_tables for allowed in table.values() for role in allowed)
        own = PRESENTED_ROLE.get(self.service)
        roles = dict.fromkeys([*named, *([own] if own else [])])
        accepted: dict[str, Role] = {}
        for role in roles:
            if role in self.role_tokens:
                accepted |= dict.fromkeys(self.role_tokens[role], role)
            elif self.embedded:
                accepted[self.role_token(role)] = role
        return accepted

    def secret_box(self) -> SecretBox:
        """The box that seals secrets at rest: MONITORS_MASTER_KEY, or, embedded, a key kept in the data
        directory. A production deployment must set MONITORS_MASTER_KEY, so every replica shares it."""
        text = self.master_key
        if not text:
            if not self.embedded:
                raise SecretBoxError("MONITORS_MASTER_KEY must be set when MONITORS_DATABASE_URL is not SQLite")
            text = local_secret(self.data_dir / "master-key", nbytes=32)
        return SecretBox(parse_master_keys(text))

    @property
    def ping_base_url(self) -> str:
        """Where heartbeat pings reach us from outside: MONITORS_PUBLIC_URL, or the ping listener itself."""
        return self.public_url or f"http://{self.ping_listen}"

    def check_before_serving(self) -> None:
        """What a service process checks before any side effect (files, migrations, ports): raises
        :class:`SettingsError` naming the variable. A bad master key used to surface after the migrations ran."""
        missing = [ROLE_TOKENS[r][0] for r in NEEDED_ROLE_TOKENS[self.service] if r not in self.role_tokens]
        if missing and not self.embedded:
            # Embedded, each process reads the tokens kept in the data directory; in production each unit
            # would make its own, and its calls would be refused (UNAUTHENTICATED) forever.
            raise SettingsError(
                f"{_listed(missing)} must be set when MONITORS_DATABASE_URL is not SQLite: each the same"
                f" secret in every process that presents or accepts it (a long random string, such as the output"
                f" of openssl rand -base64 32)"
            )
        every = [token for tokens in self.role_tokens.values() for token in set(tokens)]
        shared = [
            ROLE_TOKENS[r][0] for r, tokens in self.role_tokens.items() if any(every.count(t) > 1 for t in set(tokens))
        ]
        if shared:
            # One secret for two roles would let either call the other's RPCs: the separation would be void.
            raise SettingsError(f"{_listed(shared)} hold the same token: give each role its own")
        if self.service in SEALING_SERVICES and (self.master_key or not self.embedded):
            try:
                self.secret_box()
            except SecretBoxError as error:
                raise SettingsError(str(error)) from None

    def listeners(self) -> dict[str, str]:
        """Every address this process listens on, by the variable that sets it (checked free before start)."""
        found = {f"MONITORS_{self.service.upper()}_LISTEN": self.listen}
        if self.service == "monitor":
            found["MONITORS_PING_LISTEN"] = self.ping_listen
        if self.metrics_listen:
            found["MONITORS_METRICS_LISTEN"] = self.metrics_listen
        return found

    @property
    def embedded(self) -> bool:
        """True when the relational store is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(
        cls,
        service: ServiceName,
        env: Mapping[str, str] | None = None,
        listen: str | None = None,
    ) -> Settings:
        """Read the settings of ``service`` from ``env`` (default ``os.environ``); ``listen`` overrides."""
        env = os.environ if env is None else env
        production = not (env.get("MONITORS_DATABASE_URL") or "sqlite").startswith("sqlite")
        # Embedded, the data sits beside the checkout (make run); a production unit's working directory is
        # nobody's choice, so its default is absolute.
        default_data_dir = PRODUCTION_DATA_DIR if production else "./.data"
        data_dir = Path(env.get("MONITORS_DATA_DIR") or default_data_dir).resolve()
        listen_var = f"MONITORS_{service.upper()}_LISTEN"
        database_url = env.get("MONITORS_DATABASE_URL") or f"sqlite:///{data_dir / (service + '.sqlite3')}"
        timeseries_url = env.get("MONITORS_TIMESERIES_URL") or f"sqlite:///{data_dir / 'timeseries.sqlite3'}"
        return cls(
            service=service,
            listen=listen or env.get(listen_var) or DEFAULT_LISTEN[service],
            data_dir=data_dir,
            database_url=database_url,
            redis_url=env.get("MONITORS_REDIS_URL", ""),
            timeseries_url=timeseries_url,
            monitor_target=target_of(env, "monitor"),
            notify_target=target_of(env, "notify"),
            tls_cert_file=env.get("MONITORS_TLS_CERT_FILE", ""),
            tls_key_file=env.get("MONITORS_TLS_KEY_FILE", ""),
            tls_ca_file=env.get("MONITORS_TLS_CA_FILE", ""),
            tls_client_auth=read_choice(env, "MONITORS_TLS_CLIENT_AUTH", "off", ("off", "require")) == "require",
            max_monitors_per_user=read_int(env, "MONITORS_MAX_MONITORS_PER_USER", 1000, minimum=1),
            max_rules_per_user=read_int(env, "MONITORS_MAX_RULES_PER_USER", 1000, minimum=1),
            max_silences_per_user=read_int(env, "MONITORS_MAX_SILENCES_PER_USER", 200, minimum=1),
            max_streams_per_user=read_int(env, "MONITORS_MAX_STREAMS_PER_USER", 10, minimum=1),
            max_channels_per_user=read_int(env, "MONITORS_MAX_CHANNELS_PER_USER", 50, minimum=1),
            log_level=read_choice(env, "MONITORS_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=read_choice(env, "MONITORS_LOG_FORMAT", "json", ("json", "text", "console")),
            max_message_bytes=read_int(env, "MONITORS_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1024),
            shutdown_grace_s=read_float(env, "MONITORS_SHUTDOWN_GRACE_S", 10.0),
            drain_delay_s=read_float(env, "MONITORS_DRAIN_DELAY_S", DEFAULT_DRAIN_DELAY_S),
            rpc_timeout_s=read_float(env, "MONITORS_RPC_TIMEOUT_S", 5.0, minimum=0.001),
            auth_cache_ttl_s=read_float(env, "MONITORS_AUTH_CACHE_TTL_S", 5.0),
            raw_retention=timedelta(days=read_int(env, "MONITORS_RAW_RETENTION_DAYS", 30, minimum=1)),
            rollup_retention=timedelta(days=read_int(env, "MONITORS_ROLLUP_RETENTION_DAYS", 400, minimum=1)),
            role_tokens=_role_tokens(env),
            master_key=env.get("MONITORS_MASTER_KEY", ""),
            min_interval_s=read_float(env, "MONITORS_MIN_INTERVAL_S", 10.0, minimum=1.0),
            egress=read_choice(env, "MONITORS_EGRESS", "public", ("public", "private-allowed")),
            ca_file=env.get("MONITORS_CA_FILE", ""),
            ping_listen=env.get("MONITORS_PING_LISTEN") or DEFAULT_PING_LISTEN,
            public_url=(env.get("MONITORS_PUBLIC_URL") or "").rstrip("/"),
            declared_locations=tuple(n for n in (p.strip() for p in env.get("MONITORS_LOCATIONS", "").split(",")) if n),
            metrics_listen=env.get("MONITORS_METRICS_LISTEN", ""),
            runtime=read_choice(env, "MONITORS_RUNTIME", "local", ("local", "kubernetes")),
            kubernetes_api_url=(env.get("MONITORS_KUBERNETES_API_URL") or "").rstrip("/"),
            kubernetes_namespace=env.get("MONITORS_KUBERNETES_NAMESPACE", ""),
            monitors_per_runner=read_int(env, "MONITORS_MONITORS_PER_RUNNER", 500, minimum=1),
            max_runners_per_location=read_int(env, "MONITORS_MAX_RUNNERS_PER_LOCATION", 20, minimum=1),
            max_dedicated_per_user=read_int(env, "MONITORS_MAX_DEDICATED_PER_USER", 5),
            provider_urls={
                name: url for name in PROVIDERS if (url := env.get(f"MONITORS_PROVIDER_{name.upper()}_URL", ""))
            },
            env=dict(env),
        )
