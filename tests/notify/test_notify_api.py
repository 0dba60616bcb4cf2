"""NotificationService over gRPC, on both stacks (SQLite and MariaDB): channel CRUD with secrets masked on read
and kept when sent back masked, validation naming the field, isolation between users, SendNotification for
our services' tokens only and idempotent, TestChannel with the provider's answer, email to a bare address (the local
outbox when embedded, SendGrid through ``host=`` in production), and no secret in the service's log.

Loopback receivers (harness/receivers.py) stand in for Slack, Teams, the webhook, PagerDuty's Events API
and SendGrid; the services run with MONITORS_EGRESS=private-allowed so they may reach them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from harness.external import MariaDBServer
from harness.http import Reply
from harness.receivers import PAGERDUTY_PATH, SENDGRID_KEY, SENDGRID_PATH, ProviderReceivers
from harness.rpc import auth, rich_details
from harness.services import Stack, role_tokens_env
from monitors.v1 import account_service_pb2, account_service_pb2_grpc, common_pb2, notification_service_pb2_grpc
from monitors.v1 import notification_service_pb2 as pb
from service_runtime.secretbox import new_master_key
from services.notify_svc.senders.webhook import signature

TOKENS = role_tokens_env("notify-tests")
# SendNotification as the alert service calls it.
ALERT_TOKEN = TOKENS["MONITORS_ALERT_SERVICE_TOKEN"]
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
SIGNING_SECRET = "whsec-0123456789-abcdefghij"
Metadata = tuple[tuple[str, str]]
_names = itertools.count()


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderReceivers]:
    with ProviderReceivers(tmp_path_factory.mktemp("receivers")) as found:
        yield found


@pytest.fixture(scope="module", params=["embedded", "production"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, receivers: ProviderReceivers
) -> Iterator[Stack]:
    env = {
        "MONITORS_EGRESS": "private-allowed",
        "MONITORS_CA_FILE": str(receivers.ca_file),
        **TOKENS,
        "MONITORS_NOTIFY_TIMEOUT_S": "3",
        "MONITORS_PAGERDUTY_EVENTS_URL": receivers.url("pagerduty"),
    }
    if request.param == "production":
        mariadb: MariaDBServer = request.getfixturevalue("mariadb")
        env |= {
            "MONITORS_DATABASE_URL": mariadb.create_database("notify_api"),
            "MONITORS_MASTER_KEY": new_master_key(),
            "MONITORS_SENDGRID_API_KEY": SENDGRID_KEY,
            "MONITORS_SENDGRID_HOST": receivers.sendgrid_host,
            "MONITORS_EMAIL_FROM": "alerts@monitors.example",
        }
    with Stack(tmp_path_factory.mktemp(f"notify-{request.param}"), env) as found:
        yield found


@pytest.fixture(scope="module")
def alice(stack: Stack) -> Metadata:
    return auth(stack.create_api_key("alice.notify@example.com"))


@pytest.fixture(scope="module")
def bob(stack: Stack) -> Metadata:
    return auth(stack.create_api_key("bob.notify@example.com"))


@pytest.fixture(scope="module")
def alice_id(stack: Stack, alice: Metadata) -> str:
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        return stub.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=alice, timeout=5).user.id


@pytest.fixture
def stub(stack: Stack) -> Iterator[notification_service_pb2_grpc.NotificationServiceStub]:
    with grpc.insecure_channel(stack.address("notify")) as channel:
        yield notification_service_pb2_grpc.NotificationServiceStub(channel)


Stub = notification_service_pb2_grpc.NotificationServiceStub


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    bad = next(d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest))
    return {v.field: v.description for v in bad.field_violations}


def create(stub: Stub, who: Metadata, **config: object) -> pb.Channel:
    request = pb.CreateChannelRequest(channel=pb.Channel(**config))  # type: ignore[arg-type]
    return stub.CreateChannel(request, metadata=who, timeout=10).channel


def firing(alert_id: str) -> pb.Notification:
    return pb.Notification(
        kind=pb.NOTIFICATION_KIND_ALERT_FIRING,
        severity=common_pb2.SEVERITY_CRITICAL,
        alert_id=alert_id,
        monitor_id="mon_1",
        monitor_name="Shop",
        summary="response time above 500 ms",
        value=812.0,
        threshold=500.0,
        event_time=timestamp_pb2.Timestamp(seconds=int(time.time())),
    )


def settled(stub: Stub, who: Metadata, channel_id: str, count: int = 1, timeout_s: float = 20.0) -> list[pb.Delivery]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = stub.ListDeliveries(pb.ListDeliveriesRequest(channel_id=channel_id), metadata=who, timeout=5).deliveries
        done = [d for d in found if d.state not in (pb.DELIVERY_STATE_PENDING, pb.DELIVERY_STATE_RETRYING)]
        if len(done) >= count:
            return list(found)
        assert time.monotonic() < deadline, f"deliveries of {channel_id} not settled: {found}"
        time.sleep(0.1)


def test_channel_secrets_are_masked_on_read_and_kept_when_sent_back_masked(
    stub: Stub, alice: Metadata, receivers: ProviderReceivers
) -> None:
    name = unique("slack")
    url = receivers.url("slack", name)
    created = create(stub, alice, display_name="Ops", slack=pb.SlackConfig(webhook_url=url))
    assert created.id.startswith("chn_")
    assert created.slack.webhook_url == "https://127.0.0.1/****"
    assert created.enabled
    fetched = stub.GetChannel(pb.GetChannelRequest(id=created.id), metadata=alice, timeout=5).channel
    assert fetched == created
    listed = stub.ListChannels(pb.ListChannelsRequest(), metadata=alice, timeout=5).channels
    assert created.id in [c.id for c in listed]
    assert all(name not in c.slack.webhook_url for c in listed)

    # What a client read, sent back whole with a new name: the URL keeps its stored value.
    fetched.display_name = "Ops alerts"
    updated = stub.UpdateChannel(pb.UpdateChannelRequest(channel=fetched), metadata=alice, timeout=5).channel
    assert (updated.display_name, updated.slack.webhook_url) == ("Ops alerts", "https://127.0.0.1/****")
    tested = stub.TestChannel(pb.TestChannelRequest(id=created.id), metadata=alice, timeout=15).delivery
    assert tested.state == pb.DELIVERY_STATE_DELIVERED
    assert (tested.attempts[0].outcome, tested.attempts[0].response_code) == (pb.DELIVERY_OUTCOME_SUCCESS, 200)
    assert receivers.received(f"/slack/{name}")[-1].json["blocks"][0]["type"] == "header"

    stub.DeleteChannel(pb.DeleteChannelRequest(id=created.id), metadata=alice, timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetChannel(pb.GetChannelRequest(id=created.id), metadata=alice, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_webhook_urls_query_is_masked_on_read_and_kept_when_sent_back(
    stub: Stub, alice: Metadata, receivers: ProviderReceivers
) -> None:
    """Receivers often take their token in the URL's query (?token=...): reads mask it as they mask secrets,
    and an update that sends the read URL back keeps the stored one (sends still carry the token)."""
    name = unique("webhook")
    url = receivers.url("webhook", name) + "?token=tkn-query-secret&team=ops"
    created = create(stub, alice, webhook=pb.WebhookConfig(url=url))
    assert created.webhook.url == receivers.url("webhook", name) + "?****"
    listed = stub.ListChannels(pb.ListChannelsRequest(), metadata=alice, timeout=5).channels
    assert all("tkn-query-secret" not in c.webhook.url for c in listed)

    created.display_name = "renamed"
    updated = stub.UpdateChannel(pb.UpdateChannelRequest(channel=created), metadata=alice, timeout=5).channel
    assert (updated.display_name, updated.webhook.url) == ("renamed", created.webhook.url)
    tested = stub.TestChannel(pb.TestChannelRequest(id=created.id), metadata=alice, timeout=15).delivery
    assert tested.state == pb.DELIVERY_STATE_DELIVERED
    sent = [path for _, path, _ in receivers.tls.requests if path.startswith(f"/webhook/{name}")]
    assert sent == [f"/webhook/{name}?token=tkn-query-secret&team=ops"]


def test_invalid_channels_are_refused_naming_the_field(stub: Stub, alice: Metadata) -> None:
    legacy_teams = "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x"
    cases: dict[str, dict[str, Any]] = {
        "channel.slack.webhook_url": {"slack": pb.SlackConfig(webhook_url="http://hooks.slack.com/services/x")},
        "channel.teams.workflow_url": {"teams": pb.TeamsConfig(workflow_url=legacy_teams)},
        "channel.email.to_addresses[1]": {"email": pb.EmailConfig(to_addresses=["ok@example.com", "not-an-address"])},
        "channel.pagerduty.routing_key": {"pagerduty": pb.PagerDutyConfig(routing_key="short")},
        "channel.config": {},
        "channel.template.body": {
            "webhook": pb.WebhookConfig(url="https://example.com/hook"),
            "template": pb.MessageTemplate(body="{% if %}"),
        },
    }
    for path, config in cases.items():
        with pytest.raises(grpc.RpcError) as caught:
            create(stub, alice, **config)
        found = violations(caught.value)
        assert path in found, found
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, alice, teams=pb.TeamsConfig(workflow_url=legacy_teams))
    assert "retired" in violations(caught.value)["channel.teams.workflow_url"]


def test_another_users_channel_is_not_found(
    stub: Stub, alice: Metadata, bob: Metadata, receivers: ProviderReceivers
) -> None:
    channel = create(stub, alice, teams=pb.TeamsConfig(workflow_url=receivers.url("teams", unique("teams"))))
    calls: list[Callable[[], object]] = [
        lambda: stub.GetChannel(pb.GetChannelRequest(id=channel.id), metadata=bob, timeout=5),
        lambda: stub.UpdateChannel(
            pb.UpdateChannelRequest(
                channel=pb.Channel(id=channel.id, display_name="mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=bob,
            timeout=5,
        ),
        lambda: stub.TestChannel(pb.TestChannelRequest(id=channel.id), metadata=bob, timeout=5),
        lambda: stub.DeleteChannel(pb.DeleteChannelRequest(id=channel.id), metadata=bob, timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert channel.id not in [
        c.id for c in stub.ListChannels(pb.ListChannelsRequest(), metadata=bob, timeout=5).channels
    ]
    assert stub.GetChannel(pb.GetChannelRequest(id=channel.id), metadata=alice, timeout=5).channel.id == channel.id


def test_send_notification_is_for_our_services_tokens_only(stub: Stub, alice: Metadata, alice_id: str) -> None:
    request = pb.SendNotificationRequest(idempotency_key=unique("key"), owner_id=alice_id, notification=firing("a"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.SendNotification(request, metadata=alice, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        stub.SendNotification(
            pb.SendNotificationRequest(owner_id=alice_id, notification=firing("a")),
            metadata=auth(ALERT_TOKEN),
            timeout=5,
        )
    assert "idempotency_key" in violations(caught.value)


def test_send_notification_is_idempotent_and_signed(
    stub: Stub, alice: Metadata, alice_id: str, receivers: ProviderReceivers
) -> None:
    name = unique("webhook")
    channel = create(
        stub,
        alice,
        webhook=pb.WebhookConfig(
            url=receivers.url("webhook", name), signing_secret=SIGNING_SECRET, headers={"X-Team": "ops-secret-value"}
        ),
    )
    assert channel.webhook.signing_secret == "****"
    assert channel.webhook.headers["X-Team"] == "****"
    request = pb.SendNotificationRequest(
        idempotency_key=unique("alert-firing"),
        owner_id=alice_id,
        channel_ids=[channel.id],
        notification=firing("alr_9"),
    )
    first = stub.SendNotification(request, metadata=auth(ALERT_TOKEN), timeout=5)
    again = stub.SendNotification(request, metadata=auth(ALERT_TOKEN), timeout=5)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert [d.id for d in again.deliveries] == [d.id for d in first.deliveries]

    [delivery] = settled(stub, alice, channel.id)
    assert delivery.state == pb.DELIVERY_STATE_DELIVERED
    assert [(a.outcome, a.response_code) for a in delivery.attempts] == [(pb.DELIVERY_OUTCOME_SUCCESS, 200)]
    time.sleep(0.5)
    [received] = receivers.received(f"/webhook/{name}")
    timestamp = received.headers["x-monitors-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    assert received.headers["x-monitors-signature"] == signature(SIGNING_SECRET, timestamp, received.body)
    assert received.headers["x-team"] == "ops-secret-value"
    body = received.json
    assert (body["alert_id"], body["value"], body["threshold"], body["monitor_name"]) == ("alr_9", 812.0, 500.0, "Shop")
    assert "812" in body["text"]
    assert "500" in body["text"]


def test_test_channel_returns_the_providers_answer(stub: Stub, alice: Metadata, receivers: ProviderReceivers) -> None:
    pagerduty = create(stub, alice, pagerduty=pb.PagerDutyConfig(routing_key=ROUTING_KEY))
    assert pagerduty.pagerduty.routing_key == "****"
    ok = stub.TestChannel(pb.TestChannelRequest(id=pagerduty.id), metadata=alice, timeout=15).delivery
    assert (ok.state, ok.attempts[0].response_code) == (pb.DELIVERY_STATE_DELIVERED, 202)
    event = receivers.received(PAGERDUTY_PATH)[-1].json
    assert (event["routing_key"], event["event_action"], event["dedup_key"]) == (ROUTING_KEY, "trigger", ok.id)

    name = unique("discord")
    discord = create(stub, alice, discord=pb.DiscordConfig(webhook_url=receivers.url("discord", name)))
    receivers.script(f"/discord/{name}", Reply.json({"message": "Unknown Webhook", "code": 10015}, 404))
    gone = stub.TestChannel(pb.TestChannelRequest(id=discord.id), metadata=alice, timeout=15).delivery
    assert gone.state == pb.DELIVERY_STATE_FAILED
    [attempt] = gone.attempts
    assert (attempt.outcome, attempt.response_code) == (pb.DELIVERY_OUTCOME_PERMANENT_FAILURE, 404)
    assert "Unknown Webhook" in attempt.error


def test_email_to_a_bare_address_reaches_the_configured_provider(
    stub: Stub, stack: Stack, receivers: ProviderReceivers
) -> None:
    request = pb.SendNotificationRequest(
        idempotency_key=unique("login"),
        email_address="carol.login@example.com",
        notification=pb.Notification(kind=pb.NOTIFICATION_KIND_LOGIN_CODE, login_code="424242"),
    )
    [queued] = stub.SendNotification(request, metadata=auth(ALERT_TOKEN), timeout=5).deliveries
    assert queued.email_address == "c****@example.com"
    if "MONITORS_SENDGRID_API_KEY" in stack.env:
        mail = next(
            r.json
            for r in (receivers.wait_for(SENDGRID_PATH, 1))
            if r.json["personalizations"][0]["to"][0]["email"] == "carol.login@example.com"
        )
        assert mail["from"]["email"] == "alerts@monitors.example"
        assert {c["type"] for c in mail["content"]} == {"text/plain", "text/html"}
        assert any("424242" in c["value"] for c in mail["content"])
    else:
        outbox = stack.data_dir / "outbox.txt"
        deadline = time.monotonic() + 20
        while not (outbox.exists() and "424242" in outbox.read_text()):
            assert time.monotonic() < deadline, "no login code in the outbox"
            time.sleep(0.1)
        assert "To: carol.login@example.com" in outbox.read_text()
        log = stack.services["notify"].log_path.read_text()
        assert str(outbox) in log
        assert "424242" not in log


def test_list_deliveries_pages_and_filters(
    stub: Stub, alice: Metadata, alice_id: str, receivers: ProviderReceivers
) -> None:
    name = unique("webhook")
    channel = create(stub, alice, webhook=pb.WebhookConfig(url=receivers.url("webhook", name)))
    receivers.script(f"/webhook/{name}", Reply(400, b"rejected"))
    for index in range(3):
        stub.SendNotification(
            pb.SendNotificationRequest(
                idempotency_key=unique("page"),
                owner_id=alice_id,
                channel_ids=[channel.id],
                notification=firing(f"alr_{index}"),
            ),
            metadata=auth(ALERT_TOKEN),
            timeout=5,
        )
    everything = settled(stub, alice, channel.id, count=3)
    seen, token = [], ""
    while True:
        page = stub.ListDeliveries(
            pb.ListDeliveriesRequest(channel_id=channel.id, page_size=2, page_token=token), metadata=alice, timeout=5
        )
        seen += [d.id for d in page.deliveries]
        token = page.next_page_token
        if not token:
            break
    assert seen == [d.id for d in everything]
    assert seen == sorted(seen, reverse=True)  # newest first
    failed = stub.ListDeliveries(
        pb.ListDeliveriesRequest(channel_id=channel.id, state=pb.DELIVERY_STATE_FAILED), metadata=alice, timeout=5
    ).deliveries
    assert len(failed) == 1
    assert failed[0].attempts[0].error == "HTTP 400: rejected"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListDeliveries(pb.ListDeliveriesRequest(page_size=-1), metadata=alice, timeout=5)
    assert "page_size" in violations(caught.value)


def test_listings_that_end_on_a_full_page_hand_out_no_token(
    stub: Stub, stack: Stack, receivers: ProviderReceivers
) -> None:
    """ListChannels and ListDeliveries read one item past the page, so a listing whose count is a multiple of
    the page size ends on that full page: a next_page_token there used to lead to an empty page."""
    dave = auth(stack.create_api_key("dave.pages@example.com"))
    with grpc.insecure_channel(stack.address("monitor")) as channel:
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        dave_id = accounts.GetCurrentUser(account_service_pb2.GetCurrentUserRequest(), metadata=dave, timeout=5).user.id
    hooks = [create(stub, dave, webhook=pb.WebhookConfig(url=receivers.url("webhook", unique("pages")))) for _ in "ab"]
    for index in range(2):
        stub.SendNotification(
            pb.SendNotificationRequest(
                idempotency_key=unique("pages"),
                owner_id=dave_id,
                channel_ids=[hooks[0].id],
                notification=firing(f"alr_{index}"),
            ),
            metadata=auth(ALERT_TOKEN),
            timeout=5,
        )
    channels = stub.ListChannels(pb.ListChannelsRequest(page_size=2), metadata=dave, timeout=5)
    deliveries = stub.ListDeliveries(pb.ListDeliveriesRequest(page_size=2), metadata=dave, timeout=5)
    assert (sorted(c.id for c in channels.channels), channels.next_page_token) == (sorted(h.id for h in hooks), "")
    assert (len(deliveries.deliveries), deliveries.next_page_token) == (2, "")


def test_no_secret_reaches_the_log(stub: Stub, stack: Stack, alice: Metadata, receivers: ProviderReceivers) -> None:
    name = unique("slack-secret-path")
    channel = create(stub, alice, slack=pb.SlackConfig(webhook_url=receivers.url("slack", name)))
    receivers.script(f"/slack/{name}", Reply(500, f"upstream failed for /slack/{name}".encode()))
    failed = stub.TestChannel(pb.TestChannelRequest(id=channel.id), metadata=alice, timeout=15).delivery
    assert failed.attempts[0].response_code == 500
    assert name not in failed.attempts[0].error
    assert "****" in failed.attempts[0].error
    log = stack.services["notify"].log_path.read_text()
    for secret in (name, ROUTING_KEY, SIGNING_SECRET, "ops-secret-value"):
        assert secret not in log
