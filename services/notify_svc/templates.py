"""What a notification says: default titles and bodies, and users' overrides in sandboxed Jinja2.

Every alert message says what fired, the value and the threshold, the monitor, when, and the alert id to
acknowledge; a resolved one says how long it lasted. A user's template sees the same fields (never the login
code of someone else: login codes go to bare addresses, never through a channel's template).
"""

from __future__ import annotations

import logging
import operator
import re
import string
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.filters import do_format
from jinja2.sandbox import SandboxedEnvironment

from services.notify_svc.domain import MessageTemplate, Notification, NotificationKind, notification_fields

log = logging.getLogger(__name__)
MAX_TITLE = 250
MAX_BODY = 8000
MAX_NESTING = 30  # brackets within brackets a template's expressions may use
_MAX_PRODUCT = 10_000  # longest string or list a template may build with * or **
_MAX_WIDTH = 1000  # widest field or longest precision a template may format with %, format() or |format
# range() items one render may iterate, all ranges and all their iterations together: nested loops multiply,
# so a cap on each range alone (Jinja's is 100000) leaves 100000 ** depth.
_MAX_RANGE_ITEMS = 10_000
_range_left: ContextVar[int] = ContextVar("range_left", default=_MAX_RANGE_ITEMS)
# A %-conversion ("%(key)-08.3f", "%*d"): its width and precision.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d*)(?:\.(\*|\d*))?")


@dataclass(frozen=True)
class Message:
    """A rendered notification: a one-line title and a plain-text body, plus the facts senders format."""

    title: str
    body: str
    notification: Notification


def _check_percent_format(text: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(text.replace("%%", "")):
        if "*" in (width, precision) or int(width or 0) > _MAX_WIDTH or int(precision or 0) > _MAX_WIDTH:
            raise SecurityError("format width too large")


def _check_brace_format(text: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(text):
        # A nested field ("{:{w}}") sets a width only known later: refused with the rest.
        if spec and ("{" in spec or any(int(number) > _MAX_WIDTH for number in re.findall(r"\d+", spec))):
            raise SecurityError("format width too large")


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_percent_format(str(value))
    return do_format(value, *args, **kwargs)


class _Range:
    """range() whose every pass draws on the render's item budget (a range set once and looped over in a
    nested loop costs each time)."""

    def __init__(self, *args: int) -> None:
        self._items = range(*args)
        if len(self._items) > _MAX_RANGE_ITEMS:
            raise SecurityError("range too long")

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[int]:
        left = _range_left.get() - len(self._items)
        if left < 0:
            raise SecurityError(f"a template may loop over at most {_MAX_RANGE_ITEMS} range() items in all")
        _range_left.set(left)
        return iter(self._items)


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, also refusing ``'x' * 10**9``, ``'%2000000000d' % 1`` and the like, and loops whose
    work multiplies (the sandbox alone bounds only each range())."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:  # value is a str's format or format_map
            _check_brace_format(value.__self__)
        return wrapped

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "%":
            if isinstance(left, str):
                _check_percent_format(left)
            return left % right
        if operator_name == "**" and isinstance(right, int) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator_name == "*" and isinstance(left, str | list) and isinstance(right, int) and right > _MAX_PRODUCT:
            raise SecurityError("product too large")
        if operator_name == "*" and isinstance(right, str | list) and isinstance(left, int) and left > _MAX_PRODUCT:
            raise SecurityError("product too large")
        return (operator.mul if operator_name == "*" else operator.pow)(left, right)


_ENVIRONMENT = _Sandbox(autoescape=False, keep_trailing_newline=False)
_ENVIRONMENT.globals["range"] = _Range
_ENVIRONMENT.filters["format"] = _format_filter


def template_error(text: str) -> str:
    """Why ``text`` is not a usable template, or '' when it is: it is compiled as a send would compile it."""
    try:
        if _nesting(text) > MAX_NESTING:
            return f"nests brackets more than {MAX_NESTING} deep"
        _ENVIRONMENT.from_string(text)
    except TemplateSyntaxError as error:
        return f"is not a valid template: {error.message} (line {error.lineno})"
    except (RecursionError, SyntaxError, MemoryError):
        # Jinja's parser recurses per nested expression or block, and Python's compiler refuses more than 20
        # nested blocks: past what the bracket count catches, the template is refused, never an internal error.
        return "nests too deeply"
    return ""


def _nesting(text: str) -> int:
    """How deep ``text``'s expressions nest brackets, from the lexer's tokens (which do not recurse)."""
    depth = deepest = 0
    for _, token, value in _ENVIRONMENT.lex(text):
        if token == "operator" and value in ("(", "[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token == "operator" and value in (")", "]", "}"):
            depth -= 1
    return deepest


def human_duration(span: timedelta) -> str:
    """``2h 5m``, ``45s``: how long something lasted, to the second."""
    seconds = int(span.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if value]
    return " ".join(parts[:2]) or "0s"


def _expiry(n: Notification) -> str:
    """When a login code stops working: its validity from when it was sent (the notification's duration and
    event time), in UTC."""
    if n.duration is None:
        return "It is valid for a few minutes."
    valid = f"It is valid for {human_duration(n.duration)}"
    if n.event_time is None:
        return valid + "."
    until = (n.event_time + n.duration).astimezone(UTC)
    return f"{valid}, until {until:%H:%M} UTC ({until:%Y-%m-%d})."


def _number(value: float) -> str:
    # Ten significant digits: a price of 71234.56 reads as such (:g gave 71234.6).
    return f"{value:.10g}"


def default_title(n: Notification) -> str:
    subject = n.monitor_name or n.monitor_id or "monitor"
    match n.kind:
        case NotificationKind.ALERT_FIRING:
            return f"[{n.severity.value.upper()}] {subject}: {n.summary or 'alert firing'}"
        case NotificationKind.ALERT_REPEATED:
            return f"[{n.severity.value.upper()}] still firing: {subject}: {n.summary or 'alert firing'}"
        case NotificationKind.ALERT_ACKNOWLEDGED:
            return f"Acknowledged: {subject}: {n.summary or 'alert'}"
        case NotificationKind.ALERT_RESOLVED:
            return f"Resolved: {subject}: {n.summary or 'alert'}"
        case NotificationKind.LOGIN_CODE:
            return "Your monitors login code"
        case NotificationKind.CHANNEL_DISABLED:
            return "A notification channel was disabled"
        case _:
            return "Test notification from monitors"


def default_body(n: Notification) -> str:
    if n.kind is NotificationKind.LOGIN_CODE:
        return f"Your login code is {n.login_code}. {_expiry(n)} If you did not ask for it, ignore this message."
    if n.kind is NotificationKind.TEST:
        return "This is a test message: this channel receives your monitors' alerts."
    if n.kind is NotificationKind.CHANNEL_DISABLED:
        return n.summary
    lines = [f"What: {n.summary or 'alert'}"]
    if n.value or n.threshold:  # an alert on a state (a monitor down, silent) has neither
        lines.append(f"Value: {_number(n.value)} (threshold {_number(n.threshold)})")
    monitor = n.monitor_name or n.monitor_id
    if monitor:
        lines.append(f"Monitor: {monitor}" + (f" ({n.monitor_id})" if n.monitor_name and n.monitor_id else ""))
    if n.event_time is not None:
        lines.append(f"When: {n.event_time.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    if n.kind is NotificationKind.ALERT_RESOLVED and n.duration is not None:
        lines.append(f"Lasted: {human_duration(n.duration)}")
    if n.alert_id:
        if n.kind in (NotificationKind.ALERT_FIRING, NotificationKind.ALERT_REPEATED):
            lines.append(f"Alert: {n.alert_id} (acknowledge it to stop repeats)")
        else:
            lines.append(f"Alert: {n.alert_id}")
    return "\n".join(lines)


def template_fields(n: Notification) -> dict[str, Any]:
    """What a user's template may use: the notification's facts, and ``duration`` as ``2h 5m``."""
    fields = notification_fields(n)
    fields["event_time"] = fields["event_time"] or ""
    fields["duration"] = human_duration(n.duration) if n.duration is not None else ""
    return fields


def _render_override(text: str, fields: dict[str, Any], limit: int) -> str | None:
    budget = _range_left.set(_MAX_RANGE_ITEMS)
    try:
        # Rendered piece by piece and stopped at the limit: a template printing in a loop stops there.
        return "".join(_capped(_ENVIRONMENT.from_string(text).generate(fields), limit))[:limit]
    except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError, SyntaxError, MemoryError) as error:
        # A template that fails on these facts falls back to the default: the alert still goes out.
        log.warning("channel template failed; default used", extra={"error": str(error)[:200]})
        return None
    finally:
        _range_left.reset(budget)


def _capped(pieces: Iterator[str], limit: int) -> Iterator[str]:
    """``pieces`` until they add up to ``limit`` characters."""
    total = 0
    for piece in pieces:
        yield piece
        total += len(piece)
        if total >= limit:
            return


def render(n: Notification, template: MessageTemplate | None = None) -> Message:
    """The message for ``n``: the channel's template where it has one, else the default. Login codes and
    messages about the channel itself always use the default."""
    title, body = default_title(n), default_body(n)
    if template is not None and n.kind not in (NotificationKind.LOGIN_CODE, NotificationKind.CHANNEL_DISABLED):
        fields = template_fields(n)
        if template.title:
            title = _render_override(template.title, fields, MAX_TITLE) or title
        if template.body:
            body = _render_override(template.body, fields, MAX_BODY) or body
    # One line by every separator str.splitlines knows (\u2028, \x0b, \x85 ...): an email header refuses them all.
    title = " ".join(title.splitlines())
    return Message(title=title[:MAX_TITLE], body=body[:MAX_BODY], notification=n)
