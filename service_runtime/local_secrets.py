"""Secrets an embedded deployment keeps in its data directory when the environment gives none
(each role's token, the master key for secrets at rest)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def local_secret(path: Path, nbytes: int = 32) -> str:
    """The secret in ``path``, created (mode 0600, race-safe) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    return value
