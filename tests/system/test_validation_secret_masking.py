"""A secret never comes back in an altered form: check messages and delivery errors mask it in any case,
percent-encoded, JSON- or backslash-escaped, as HTML references, in base64 at any alignment, as IDNA, or cut
short, through the real checks against real servers as well as in the masking function itself."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable

import pytest

from harness.http import HttpServer, Reply
from service_runtime.egress import EgressConfig, EgressPolicy
from service_runtime.secret_masking import mask_secrets
from services.monitor_svc.checks import CheckConfig, Checker
from services.monitor_svc.domain import JsonPathAssertion, WebsiteSpec
from services.notify_svc.domain import redact

SECRET = 'Tok3n/"Ünïcode" +Key&Mix'

FORMS: dict[str, Callable[[str], str]] = {
    "exact": lambda v: v,
    "lower case (a resolver's host name)": str.lower,
    "upper case": str.upper,
    "percent-encoded": lambda v: urllib.parse.quote(v, safe=""),
    "percent-encoded, lower-case hex": lambda v: urllib.parse.quote(v, safe="").replace("%C3%9C", "%c3%9c"),
    "percent-encoded as a path": urllib.parse.quote,
    "form-encoded": urllib.parse.quote_plus,
    "JSON-escaped": lambda v: json.dumps(v)[1:-1],
    "JSON-escaped, non-ASCII kept": lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    "Python repr": lambda v: repr(v)[1:-1],
    "HTML-escaped": lambda v: v.replace("&", "&amp;").replace('"', "&quot;"),
    "HTML numeric references": lambda v: "".join(f"&#{ord(c)};" for c in v),
    "base64 after 'user:' (Basic credentials)": lambda v: base64.b64encode(f"user:{v}".encode()).decode(),
    "base64 after 'u:'": lambda v: base64.b64encode(f"u:{v}".encode()).decode(),
    "base64 after ':'": lambda v: base64.b64encode(f":{v}".encode()).decode(),
    "URL-safe base64": lambda v: base64.urlsafe_b64encode(f"user:{v}".encode()).decode(),
    "mixed: percent and case": lambda v: urllib.parse.quote(v[:8], safe="") + v[8:].lower(),
}


def leaked(text: str, value: str) -> list[str]:
    """Which forms of ``value`` (and which runs of 6 of its characters) are still readable in ``text``."""
    found = [name for name, form in FORMS.items() if form(value) in text]
    lowered = text.lower()
    found += [value[i : i + 6] for i in range(len(value) - 5) if value[i : i + 6].lower() in lowered]
    return found


@pytest.mark.parametrize("form", list(FORMS))
def test_every_usual_spelling_of_a_secret_is_masked(form: str) -> None:
    text = f"target said: <{FORMS[form](SECRET)}> and more"
    masked = mask_secrets(text, [SECRET])
    assert "****" in masked
    assert masked.startswith("target said: <")
    assert masked.endswith("> and more")
    assert not leaked(masked, SECRET), masked


@pytest.mark.parametrize("value", ["abcdefghijkl", "x" * 600 + "/é y"], ids=["short", "over 512 characters"])
def test_long_and_short_secrets_are_masked_in_each_encoding(value: str) -> None:
    for form in (value, value.upper(), urllib.parse.quote(value, safe=""), json.dumps(value)[1:-1]):
        assert mask_secrets(f"[{form}]", [value]) == "[****]"


def test_a_host_name_secret_comes_back_as_idna() -> None:
    assert mask_secrets("xn--bcher-kva.example.invalid does not resolve", ["bücher.example"]) == (
        "****.invalid does not resolve"
    )


def test_a_secret_cut_short_is_masked_where_it_was_cut() -> None:
    assert mask_secrets('expected one of [Tok3n/"Ünï…, 1.2.3.4]', [SECRET]) == "expected one of [****…, 1.2.3.4]"
    assert mask_secrets("the message ends in tok3n/", [SECRET]) == "the message ends in ****"
    assert mask_secrets("a short Tok…", [SECRET]) == "a short Tok…"  # 3 characters say nothing


def test_text_without_the_secret_is_left_alone() -> None:
    text = "GET https://example.com/health answered 503 Service Unavailable in 12 ms"
    assert mask_secrets(text, [SECRET, "hunter2-password"]) == text
    assert mask_secrets(text, []) == text
    assert mask_secrets(text, [""]) == text


def test_notification_errors_mask_every_spelling_too() -> None:
    detail = f"HTTP 400: bad header {json.dumps(SECRET)} / {urllib.parse.quote(SECRET)}"
    assert not leaked(redact(detail, {"headers.X-Key": SECRET}), SECRET)


# --- through the real checks -------------------------------------------------------------------------------


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    made = Checker(CheckConfig(egress=EgressConfig(policy=EgressPolicy.PRIVATE_ALLOWED)))
    yield made
    await made.close()


async def test_a_secret_in_the_host_comes_back_lowercased_from_the_resolver_and_is_masked(checker: Checker) -> None:
    secret = "MiXeDCaseHostToken"
    spec = WebsiteSpec(url="http://{{secret:HOST}}.invalid/")
    outcome = await checker.run(spec, 5, {"HOST": secret})
    assert (outcome.is_up, outcome.error_class) == (False, "dns"), outcome
    assert "****" in outcome.message
    assert not leaked(outcome.message, secret), outcome.message


@pytest.mark.parametrize(
    "echo",
    [
        lambda v: Reply.json({"token": v}),  # JSON-escaped by the check's message
        lambda v: Reply.json({"token": urllib.parse.quote(v, safe="")}),
        lambda v: Reply.json({"token": base64.b64encode(f"user:{v}".encode()).decode()}),
    ],
)
async def test_an_echoed_secret_in_a_json_path_message_is_masked(
    checker: Checker, echo: Callable[[str], Reply]
) -> None:
    with HttpServer() as target:
        target.routes["/echo"] = echo(SECRET)
        spec = WebsiteSpec(
            url=target.url("/echo"),
            headers={"X-Key": "{{secret:KEY}}"},
            json_path=JsonPathAssertion("$.token", "==", "something else"),
        )
        outcome = await checker.run(spec, 5, {"KEY": SECRET})
    assert (outcome.is_up, outcome.error_class) == (False, "assertion"), outcome
    assert outcome.message.startswith("$.token is "), outcome.message
    assert not leaked(outcome.message, SECRET), outcome.message


@pytest.mark.parametrize("padding", [85, 89, 90, 95])
async def test_a_secret_in_an_invalid_host_name_is_not_echoed_in_part(checker: Checker, padding: int) -> None:
    """An invalid host name (a label over 63 characters) had been echoed cut at 100 characters: with padding
    before it, the cut fell inside the substituted secret, and its first characters came back unmasked."""
    secret = "Zq9xKpLm7Wv"
    spec = WebsiteSpec(url=f"http://{'a' * padding}{{{{secret:HOSTSEC}}}}{'b' * 20}.invalid/")
    outcome = await checker.run(spec, 3, {"HOSTSEC": secret})
    assert not outcome.is_up
    assert secret.lower()[:4] not in outcome.message.lower(), outcome.message
