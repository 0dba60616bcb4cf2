"""Apprise URLs: only the schemes of notification services reached over the network are accepted (an allow-list,
not a list of known-bad ones), and a host left empty is judged as the address the library really uses.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from service_runtime.egress import EgressPolicy
from service_runtime.errors import InvalidArgument
from services.notify_svc.domain import (
    AppriseConfig,
    ChannelDraft,
    Notification,
    NotificationKind,
    Outcome,
    validate_channel,
)
from services.notify_svc.notifications import CHANNEL_CHECKS
from services.notify_svc.senders.apprise_urls import (
    ALLOWED_SCHEMES,
    AppriseSender,
    plugin_for,
    server_names,
    url_problem,
)
from services.notify_svc.templates import render

MESSAGE = render(Notification(NotificationKind.TEST))


@pytest.mark.parametrize(
    "url",
    [
        "syslog://",  # this host's own log
        "syslog://local5",
        "SYSLOG://user",
        " syslog://",
        "rsyslog://logs.example.com",  # UDP log lines, not notifications
        "rsyslog://?port=514",
        "dbus://",  # desktop notifications on this machine
        "kde://",
        "windows://",
        "macosx://",
        "gnome://",
        "blink1://",  # a USB light on this machine
        "vapid://someone@example.com/https://push.example.com?keyfile=/etc/passwd",
        "nosuchscheme://x",
    ],
)
def test_schemes_outside_the_allow_list_are_refused_when_saved(url: str) -> None:
    problem = url_problem(url)
    assert problem is not None
    assert "which this service does not send to" in problem
    with pytest.raises(InvalidArgument) as caught:
        validate_channel(ChannelDraft(config=AppriseConfig(url)), CHANNEL_CHECKS)
    assert [v.field for v in caught.value.violations] == ["channel.apprise.url"]


@pytest.mark.parametrize(
    "url",
    [
        "tgram://123456789:AAbbCC/12345",
        "TGRAM://123456789:AAbbCC/12345",
        "ntfys://ntfy.example.com/topic",
        "pover://user@token",
        "mailtos://user:pass@example.com?to=b@example.com",
        "matrixs://user:pass@matrix.example.com/#room",
        "jsons://hooks.example.com/notify",
        "discord://1234/abcd",
    ],
)
def test_notification_services_are_allowed(url: str) -> None:
    assert url_problem(url) is None


def test_the_allow_list_names_no_local_sink() -> None:
    assert not ALLOWED_SCHEMES & {"syslog", "rsyslog", "dbus", "kde", "qt", "glib", "gio", "gnome", "macosx"}
    assert not ALLOWED_SCHEMES & {"windows", "blink1", "vapid", "file", "growl"}


def test_an_empty_host_is_judged_as_this_machine() -> None:
    plugin = plugin_for("rsyslog://?port=5514")  # the plugin sends to ("", port): this machine
    assert plugin is not None
    assert server_names(plugin) == ["localhost"]
    token = plugin_for("tgram://123456789:AAbbCC/12345")  # the host position holds a token, not a server
    assert token is not None
    assert "localhost" not in server_names(token)


class UdpSink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.marked = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        self.datagrams.append(data)
        if data == b"marker":
            self.marked.set()


async def test_rsyslog_with_an_empty_host_sends_nothing_to_this_machine() -> None:
    """A channel saved before the allow-list: its send is refused, and no datagram reaches this machine."""
    transport, sink = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpSink, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        result = await AppriseSender(EgressPolicy.PUBLIC).send(
            AppriseConfig(f"rsyslog://?port={port}"), MESSAGE, "d", 2.0
        )
        # A marker sent after the send: once it is in, any datagram the send made is in before it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            marker.sendto(b"marker", ("127.0.0.1", port))
        await asyncio.wait_for(sink.marked.wait(), 5.0)
    finally:
        transport.close()
    assert result.outcome is Outcome.PERMANENT
    assert result.detail.startswith("refused target: the URL uses rsyslog://")
    assert sink.datagrams == [b"marker"]
