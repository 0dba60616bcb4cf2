"""Secrets at rest: AES-GCM sealing bound to owner and name, key rotation, master key settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from service_runtime.secretbox import SecretBox, SecretBoxError, new_master_key, parse_master_keys
from service_runtime.settings import Settings


def box(*keys: str) -> SecretBox:
    return SecretBox(parse_master_keys(",".join(keys)))


def test_a_sealed_value_opens_only_for_its_owner_and_name() -> None:
    b = box(new_master_key())
    sealed = b.seal("hunter2", "user-a", "API_TOKEN")
    assert b"hunter2" not in sealed
    assert b.open(sealed, "user-a", "API_TOKEN") == "hunter2"
    for context in (("user-b", "API_TOKEN"), ("user-a", "OTHER"), ("user-aAPI_TOKEN", ""), ()):
        with pytest.raises(SecretBoxError):
            b.open(sealed, *context)


def test_sealing_twice_gives_different_ciphertexts() -> None:
    b = box(new_master_key())
    assert b.seal("x", "o", "n") != b.seal("x", "o", "n")


def test_a_tampered_value_does_not_open() -> None:
    b = box(new_master_key())
    sealed = bytearray(b.seal("value", "o", "n"))
    sealed[-1] ^= 1
    with pytest.raises(SecretBoxError):
        b.open(bytes(sealed), "o", "n")
    with pytest.raises(SecretBoxError, match="not a sealed value"):
        b.open(b"short", "o", "n")


def test_rotation_new_key_seals_old_keys_still_open() -> None:
    old, new = new_master_key(), new_master_key()
    sealed_old = box(old).seal("v1", "o", "n")
    rotated = box(new, old)
    assert rotated.open(sealed_old, "o", "n") == "v1"
    assert box(new).open(rotated.seal("v2", "o", "n"), "o", "n") == "v2"
    with pytest.raises(SecretBoxError, match="no longer configured"):
        box(new).open(sealed_old, "o", "n")


@pytest.mark.parametrize("text", ["", "not base64 !!", "c2hvcnQ"])
def test_malformed_master_keys_are_refused(text: str) -> None:
    with pytest.raises(SecretBoxError, match="MONITORS_MASTER_KEY"):
        parse_master_keys(text)


def test_embedded_mode_keeps_a_key_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env("monitor", {"MONITORS_DATA_DIR": str(tmp_path)})
    sealed = settings.secret_box().seal("v", "o", "n")
    assert (tmp_path / "master-key").stat().st_mode & 0o777 == 0o600
    assert Settings.from_env("monitor", {"MONITORS_DATA_DIR": str(tmp_path)}).secret_box().open(sealed, "o", "n") == "v"


def test_production_mode_requires_a_master_key(tmp_path: Path) -> None:
    env = {"MONITORS_DATA_DIR": str(tmp_path), "MONITORS_DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1/db"}
    with pytest.raises(SecretBoxError, match="must be set"):
        Settings.from_env("monitor", env).secret_box()
    key = new_master_key()
    sealed = Settings.from_env("monitor", {**env, "MONITORS_MASTER_KEY": key}).secret_box().seal("v", "o", "n")
    assert box(key).open(sealed, "o", "n") == "v"


def test_derived_keys_differ_by_purpose_and_follow_the_sealing_key() -> None:
    key = new_master_key()
    assert box(key).derive_key("login-codes") == box(key, new_master_key()).derive_key("login-codes")
    assert box(key).derive_key("login-codes") != box(key).derive_key("other")
    assert box(key).derive_key("login-codes") != box(new_master_key()).derive_key("login-codes")
    assert len(box(key).derive_key("x")) == 32
