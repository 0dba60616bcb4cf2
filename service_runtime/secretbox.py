"""Secrets at rest: AES-256-GCM under a master key, bound to their owner and name.

A sealed value is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag``. The associated
data names what the value is for (for a monitor secret: its owner and name), so a ciphertext copied onto
another row or another user does not open. ``MONITORS_MASTER_KEY`` may list several keys, comma-separated:
the first seals, all open, so a key is rotated by prepending the new one and re-sealing at leisure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
_HEADER = 1 + 4 + 12


class SecretBoxError(Exception):
    """A master key is malformed, or a sealed value does not open with any key for its context."""


KEY_FORMATS = (
    "32 bytes as base64, URL-safe or standard, padded or not (python -m services.admin new-master-key,"
    " openssl rand -base64 32), or as 64 hex digits (openssl rand -hex 32)"
)
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def parse_master_keys(text: str) -> list[bytes]:
    """Keys from ``MONITORS_MASTER_KEY``, comma-separated, each in one of :data:`KEY_FORMATS`."""
    keys = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if _HEX_KEY.fullmatch(part):  # never 32 bytes read as base64 (that would be 48), so never ambiguous
            keys.append(bytes.fromhex(part))
            continue
        try:
            key = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError) as error:
            raise SecretBoxError(f"MONITORS_MASTER_KEY: each key must be {KEY_FORMATS}") from error
        if len(key) != 32:
            raise SecretBoxError(f"MONITORS_MASTER_KEY: each key must be {KEY_FORMATS}; got {len(key)} bytes")
        keys.append(key)
    if not keys:
        raise SecretBoxError("MONITORS_MASTER_KEY is empty")
    return keys


def new_master_key() -> str:
    """A fresh key in the form MONITORS_MASTER_KEY takes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"monitors-secretbox-key-id" + key).digest()[:4]


def _associated_data(context: Sequence[str]) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    return b"".join(len(part.encode()).to_bytes(4, "big") + part.encode() for part in context)


class SecretBox:
    """Seals and opens short secrets. Thread- and task-safe; one per process."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretBoxError("at least one master key is needed")
        self._derivation_key = keys[0]
        self._sealing = AESGCM(keys[0])
        self._sealing_id = _key_id(keys[0])
        self._opening = {_key_id(key): AESGCM(key) for key in keys}

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (such as keyed hashes of login codes), derived from the sealing key."""
        return hmac.new(self._derivation_key, b"monitors-derived-key:" + purpose.encode(), hashlib.sha256).digest()

    def seal(self, plaintext: str, *context: str) -> bytes:
        nonce = os.urandom(12)
        body = self._sealing.encrypt(nonce, plaintext.encode(), _associated_data(context))
        return bytes([VERSION]) + self._sealing_id + nonce + body

    def open(self, sealed: bytes, *context: str) -> str:
        if len(sealed) < _HEADER + 16 or sealed[0] != VERSION:
            raise SecretBoxError("not a sealed value")
        aead = self._opening.get(sealed[1:5])
        if aead is None:
            raise SecretBoxError("sealed under a master key that is no longer configured")
        try:
            return aead.decrypt(sealed[5:17], sealed[17:], _associated_data(context)).decode()
        except InvalidTag as error:
            raise SecretBoxError("does not open: wrong key, or sealed for another owner or name") from error
