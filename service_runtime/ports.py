"""Listening addresses checked before a process does anything else (the runner's too, which needs no more of
:mod:`service_runtime.server`)."""

from __future__ import annotations

import errno
import socket

from service_runtime.settings import StartupError


def ensure_free(variable: str, address: str) -> None:
    """Raise :class:`StartupError` naming ``address`` if another process listens there (or we may not).

    A probe bind, before anything else happens (migrations, files, connections): the gRPC server binds later,
    without SO_REUSEPORT, and would fail then too, but only after the side effects."""
    host, _, port_text = address.rpartition(":")
    if address.startswith("unix:") or not port_text.isdigit() or int(port_text) == 0:
        return
    port = int(port_text)
    try:
        candidates = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise StartupError(f"{variable}={address}: cannot resolve {host!r} ({error.strerror})") from None
    for family, kind, protocol, _, socket_address in candidates:
        with socket.socket(family, kind, protocol) as probe:
            # As gRPC does: a port whose last connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(socket_address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise StartupError(
                        f"{address} ({variable}) is already in use: another process listens there"
                        " (is this service already running?)"
                    ) from None
                if error.errno == errno.EACCES:
                    raise StartupError(f"{address} ({variable}): permission denied to listen there") from None
                # EADDRNOTAVAIL and the like: one of the names' addresses is not this machine's (``localhost``
                # without IPv6); gRPC's own bind decides.
