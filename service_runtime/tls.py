"""TLS for our gRPC servers and the channels between our processes, one setting away.

- ``MONITORS_TLS_CERT_FILE`` + ``MONITORS_TLS_KEY_FILE``: the server listens with TLS (plaintext otherwise,
  the loopback default), and our clients present this certificate, so mutual TLS works when asked for.
- ``MONITORS_TLS_CA_FILE``: the CA our clients trust for our servers (system roots when unset but TLS is on),
  and that servers verify client certificates against.
- ``MONITORS_TLS_CLIENT_AUTH=require``: servers refuse clients without a certificate from that CA (mTLS).
  Callers still present a bearer token: mTLS secures the transport, tokens say who is calling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from service_runtime.settings import Settings, SettingsError


def _read(path: str, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{variable}: cannot read {path}: {error.strerror}") from None


def tls_enabled(settings: Settings) -> bool:
    return bool(settings.tls_cert_file or settings.tls_ca_file)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for ``add_secure_port``, or None for plaintext."""
    if not settings.tls_cert_file:
        return None
    if not settings.tls_key_file:
        raise SettingsError("MONITORS_TLS_KEY_FILE must be set with MONITORS_TLS_CERT_FILE")
    pair = (
        _read(settings.tls_key_file, "MONITORS_TLS_KEY_FILE"),
        _read(settings.tls_cert_file, "MONITORS_TLS_CERT_FILE"),
    )
    client_ca = _read(settings.tls_ca_file, "MONITORS_TLS_CA_FILE") if settings.tls_ca_file else None
    if settings.tls_client_auth and client_ca is None:
        raise SettingsError("MONITORS_TLS_CLIENT_AUTH=require needs MONITORS_TLS_CA_FILE")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=settings.tls_client_auth
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials for a channel to another of our services, or None for plaintext."""
    if not tls_enabled(settings):
        return None
    roots = _read(settings.tls_ca_file, "MONITORS_TLS_CA_FILE") if settings.tls_ca_file else None
    if settings.tls_cert_file and settings.tls_key_file:
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=_read(settings.tls_key_file, "MONITORS_TLS_KEY_FILE"),
            certificate_chain=_read(settings.tls_cert_file, "MONITORS_TLS_CERT_FILE"),
        )
    return grpc.ssl_channel_credentials(root_certificates=roots)


def open_channel(target: str, settings: Settings, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An asyncio channel to another of our services, with TLS when the settings turn it on."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials, options=list(options))
