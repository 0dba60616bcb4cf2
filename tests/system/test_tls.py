"""TLS one setting away: a stack whose three services serve TLS and require client certificates (mTLS), whose
own calls between services (token checks, login emails) go over TLS, and which refuses plaintext and
certificate-less clients."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from harness.http import self_signed_certificate
from harness.rpc import auth
from harness.services import Stack, channel_for
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)

pb = account_service_pb2


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("certs"))
    env = {
        "MONITORS_TLS_CERT_FILE": str(cert),
        "MONITORS_TLS_KEY_FILE": str(key),
        "MONITORS_TLS_CA_FILE": str(cert),  # self-signed: its own CA
        "MONITORS_TLS_CLIENT_AUTH": "require",
    }
    with Stack(tmp_path_factory.mktemp("tls"), env) as started:
        yield started


def test_clients_with_a_certificate_are_served_and_services_talk_over_tls(tls_stack: Stack) -> None:
    key = tls_stack.create_api_key("tls.user@example.com")
    with channel_for(tls_stack.address("monitor"), tls_stack.env) as channel:
        me = account_service_pb2_grpc.AccountServiceStub(channel).GetCurrentUser(
            pb.GetCurrentUserRequest(), metadata=auth(key), timeout=5
        )
        assert me.user.email == "tls.user@example.com"
        # Login: the monitor service hands the code to the notification service over mTLS.
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        accounts.StartLogin(pb.StartLoginRequest(email="tls.login@example.com"), timeout=5)
        outbox = Path(tls_stack.data_dir) / "outbox.txt"
        deadline = time.monotonic() + 15
        while "tls.login@example.com" not in (outbox.read_text() if outbox.exists() else ""):
            assert time.monotonic() < deadline, "no login email"
            time.sleep(0.1)
    # The notification service checks the token with the monitor service over mTLS.
    with channel_for(tls_stack.address("notify"), tls_stack.env) as channel:
        notify = notification_service_pb2_grpc.NotificationServiceStub(channel)
        notify.ListChannels(notification_service_pb2.ListChannelsRequest(), metadata=auth(key), timeout=5)
    assert re.search(r"\b\d{6}\b", outbox.read_text())


@pytest.mark.parametrize("service", ["monitor", "alert", "notify"])
def test_plaintext_and_certificateless_clients_are_refused(tls_stack: Stack, service: str) -> None:
    address = tls_stack.address(service)
    without_certificate = {"MONITORS_TLS_CA_FILE": tls_stack.env["MONITORS_TLS_CA_FILE"]}
    for env in ({}, without_certificate):
        with channel_for(address, env) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                account_service_pb2_grpc.AccountServiceStub(channel).GetCurrentUser(
                    pb.GetCurrentUserRequest(), timeout=3
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (env, caught.value)


def test_a_runner_syncs_its_assignments_over_mtls(tls_stack: Stack) -> None:
    """The runner reports SERVING (on its plaintext health port) only after its first assignment sync,
    which here goes to the monitor service over mutual TLS."""
    runner = tls_stack.runner("tls-runner")
    runner.start(timeout_s=20)
    try:
        assert "runner started" in runner.log_tail()
    finally:
        runner.stop()
