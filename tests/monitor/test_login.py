"""Email one-time-code login end to end: the monitor service asks the real notification service to send the
code, which (no email provider configured) writes it to the local outbox, where these tests read it like a
local user would. Sessions then work on every service; Logout revokes them.

Rate-limit counters are per client address, and every test here calls from 127.0.0.1, so the tests that
spend many codes run on stacks of their own with their own limits.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from harness.rpc import auth, rich_details
from harness.services import Stack
from monitors.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from service_runtime.auth import token_digest

pb = account_service_pb2
SEPARATOR = "\n" + "-" * 72 + "\n"


def mails_to(stack: Stack, address: str) -> list[str]:
    outbox = Path(stack.data_dir) / "outbox.txt"
    if not outbox.exists():
        return []
    return [mail for mail in outbox.read_text().split(SEPARATOR) if f"To: {address}\n" in mail]


def start_login(stub: account_service_pb2_grpc.AccountServiceStub, stack: Stack, address: str) -> str:
    """StartLogin, then the code from the email that arrives in the outbox."""
    before = len(mails_to(stack, address))
    reply = stub.StartLogin(pb.StartLoginRequest(email=address), timeout=5)
    assert reply.code_ttl.seconds > 0
    deadline = time.monotonic() + 15
    while len(mails := mails_to(stack, address)) == before:
        assert time.monotonic() < deadline, f"no login email for {address}"
        time.sleep(0.1)
    codes = re.findall(r"\b(\d{6})\b", mails[-1].split("\n\n", 1)[1])
    assert codes, mails[-1]
    return str(codes[0])


def complete(stub: account_service_pb2_grpc.AccountServiceStub, address: str, code: str) -> pb.CompleteLoginResponse:
    return stub.CompleteLogin(pb.CompleteLoginRequest(email=address, code=code), timeout=5)


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def limit_of(error: grpc.RpcError) -> str:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    info = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.ErrorInfo))
    return str(info.metadata["limit"])


@pytest.fixture
def stub(stack: Stack) -> Iterator[account_service_pb2_grpc.AccountServiceStub]:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        yield account_service_pb2_grpc.AccountServiceStub(channel)


def test_login_creates_the_account_and_the_session_works_everywhere_until_logout(
    stack: Stack, stub: account_service_pb2_grpc.AccountServiceStub
) -> None:
    address = "New.Person@Example.com"
    code = start_login(stub, stack, address.lower())
    session = complete(stub, address, code)
    assert session.session_token.startswith("ms_")
    assert session.user.email == "new.person@example.com"
    assert session.expire_time.seconds > time.time() + 29 * 86400
    me = stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth(session.session_token), timeout=5).user
    assert me == session.user
    with grpc.insecure_channel(stack.address("notify")) as channel:
        notify = notification_service_pb2_grpc.NotificationServiceStub(channel)
        notify.ListChannels(
            notification_service_pb2.ListChannelsRequest(), metadata=auth(session.session_token), timeout=5
        )
    # A second login of the same address is the same account.
    again = complete(stub, address, start_login(stub, stack, address.lower()))
    assert again.user.id == session.user.id
    assert again.session_token != session.session_token

    stub.Logout(pb.LogoutRequest(), metadata=auth(session.session_token), timeout=5)
    gone = refused(
        lambda: stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth(session.session_token), timeout=5)
    )
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    # The other session is untouched.
    stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth(again.session_token), timeout=5)

    assert (Path(stack.data_dir) / "outbox.txt").stat().st_mode & 0o777 == 0o600  # codes: this user only
    # Nothing secret in any log line of any service: not the code, not the session tokens, not the address.
    logs = "".join(path.read_text() for path in Path(stack.data_dir).glob("*.log"))
    for secret in (code, session.session_token, again.session_token, token_digest(session.session_token)):
        assert secret not in logs
    assert "new.person@example.com" not in logs


def test_the_login_email_says_until_when_the_code_works(
    stack: Stack, stub: account_service_pb2_grpc.AccountServiceStub
) -> None:
    sent = datetime.now(UTC)
    ttl = stub.StartLogin(pb.StartLoginRequest(email="when@example.com"), timeout=5).code_ttl.seconds
    deadline = time.monotonic() + 15
    while not (mails := mails_to(stack, "when@example.com")):
        assert time.monotonic() < deadline, "no login email"
        time.sleep(0.1)
    body = mails[-1].split("\n\n", 1)[1]

    match = re.search(r"valid for (\S+), until (\d\d:\d\d) UTC \((\d{4}-\d\d-\d\d)\)", body)
    assert match, body
    until = datetime.strptime(f"{match[3]} {match[2]}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert abs((until - (sent + timedelta(seconds=ttl))).total_seconds()) <= 120
    assert "soon" not in body


def test_a_code_works_once(stack: Stack, stub: account_service_pb2_grpc.AccountServiceStub) -> None:
    address = "once@example.com"
    code = start_login(stub, stack, address)
    complete(stub, address, code)
    reused = refused(lambda: complete(stub, address, code))
    assert reused.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_new_code_replaces_the_old_one(stack: Stack, stub: account_service_pb2_grpc.AccountServiceStub) -> None:
    address = "resend@example.com"
    old = start_login(stub, stack, address)
    new = start_login(stub, stack, address)
    if old != new:  # one in a million they coincide
        assert refused(lambda: complete(stub, address, old)).code() == grpc.StatusCode.UNAUTHENTICATED
    complete(stub, address, new)


def test_five_wrong_tries_burn_the_code(stack: Stack, stub: account_service_pb2_grpc.AccountServiceStub) -> None:
    address = "guesser@example.com"
    code = start_login(stub, stack, address)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert refused(lambda: complete(stub, address, wrong)).code() == grpc.StatusCode.UNAUTHENTICATED
    burnt = refused(lambda: complete(stub, address, code))
    assert burnt.code() == grpc.StatusCode.UNAUTHENTICATED


def test_malformed_requests_name_the_field(stub: account_service_pb2_grpc.AccountServiceStub) -> None:
    assert refused(lambda: stub.StartLogin(pb.StartLoginRequest(email="nope"), timeout=5)).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    error = refused(lambda: complete(stub, "a@example.com", ""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "code" in (error.details() or "")


def test_logout_with_an_api_key_is_refused(stack: Stack, stub: account_service_pb2_grpc.AccountServiceStub) -> None:
    key = stack.create_api_key("keyholder@example.com")
    error = refused(lambda: stub.Logout(pb.LogoutRequest(), metadata=auth(key), timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth(key), timeout=5)  # the key still works


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "MONITORS_LOGIN_CODES_PER_ADDRESS": "2",
        "MONITORS_LOGIN_CODES_PER_CLIENT": "5",
        "MONITORS_LOGIN_ATTEMPTS_PER_CLIENT": "8",
        "MONITORS_LOGIN_CODE_TTL_S": "2",
    }
    with Stack(tmp_path_factory.mktemp("login-limits"), env) as started:
        yield started


def test_codes_expire_and_rate_limits_hold_per_address_and_per_client(limited: Stack) -> None:
    with grpc.insecure_channel(limited.address("monitor")) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        code = start_login(stub, limited, "slow@example.com")
        time.sleep(2.5)
        assert refused(lambda: complete(stub, "slow@example.com", code)).code() == grpc.StatusCode.UNAUTHENTICATED

        start_login(stub, limited, "slow@example.com")  # the address's second code in the window
        error = refused(lambda: stub.StartLogin(pb.StartLoginRequest(email="slow@example.com"), timeout=5))
        assert limit_of(error) == "login_codes_per_address"

        stub.StartLogin(pb.StartLoginRequest(email="other1@example.com"), timeout=5)
        stub.StartLogin(pb.StartLoginRequest(email="other2@example.com"), timeout=5)
        # The refused call above counted too: 5 from this client now.
        error = refused(lambda: stub.StartLogin(pb.StartLoginRequest(email="other3@example.com"), timeout=5))
        assert limit_of(error) == "login_codes_per_client"

        # The expired code's attempt above was the first of this client's 8.
        attempts = [refused(lambda: complete(stub, "other1@example.com", "000000")).code() for _ in range(7)]
        assert set(attempts) == {grpc.StatusCode.UNAUTHENTICATED}
        error = refused(lambda: complete(stub, "other1@example.com", "000000"))
        assert limit_of(error) == "login_attempts_per_client"


@pytest.fixture(scope="module")
def daily(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "MONITORS_LOGIN_CODES_PER_ADDRESS": "100",
        "MONITORS_LOGIN_CODES_PER_CLIENT": "100",
        "MONITORS_LOGIN_CODES_PER_ADDRESS_PER_DAY": "3",
    }
    with Stack(tmp_path_factory.mktemp("login-daily"), env) as started:
        yield started


def test_an_address_gets_a_few_codes_a_day_whatever_the_window(daily: Stack) -> None:
    """Five codes per 15 minutes alone allowed 2,400 guesses a day at one address's codes."""
    with grpc.insecure_channel(daily.address("monitor")) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        for _ in range(3):
            stub.StartLogin(pb.StartLoginRequest(email="target@example.com"), timeout=5)
        error = refused(lambda: stub.StartLogin(pb.StartLoginRequest(email="target@example.com"), timeout=5))
        assert limit_of(error) == "login_codes_per_address_per_day"
        assert "tomorrow" in (error.details() or "")
        stub.StartLogin(pb.StartLoginRequest(email="someone.else@example.com"), timeout=5)  # per address


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("login-roomy"), {"MONITORS_LOGIN_CODES_PER_CLIENT": "1000"}) as started:
        yield started


def test_known_and_unknown_addresses_get_the_same_answer_in_about_the_same_time(roomy: Stack) -> None:
    known = [f"known{i}@example.com" for i in range(15)]
    for address in known:
        roomy.create_api_key(address)
    unknown = [f"stranger{i}@example.com" for i in range(15)]
    with grpc.insecure_channel(roomy.address("monitor")) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        stub.StartLogin(pb.StartLoginRequest(email="warm.up@example.com"), timeout=5)
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        answers: dict[str, set[bytes]] = {"known": set(), "unknown": set()}
        for pair in zip(known, unknown, strict=True):
            for kind, address in zip(("known", "unknown"), pair, strict=True):
                started = time.perf_counter()
                reply = stub.StartLogin(pb.StartLoginRequest(email=address), timeout=5)
                timings[kind].append(time.perf_counter() - started)
                answers[kind].add(reply.SerializeToString())
    assert answers["known"] == answers["unknown"]
    assert len(answers["known"]) == 1
    # Both take one key-value write and no account lookup; medians within a few milliseconds of each other.
    difference = abs(statistics.median(timings["known"]) - statistics.median(timings["unknown"]))
    assert difference < 0.010, timings
