"""One line when an alert fires, is acknowledged or resolves, for the person watching (``make run``'s terminal)
and the production log alike (logger ``monitors.events.alert``)."""

from __future__ import annotations

from service_runtime.logs import event_log
from services.alert_svc.domain import Alert, Transition

log = event_log("alert")
_WORDS = {Transition.FIRED: "FIRING", Transition.ACKNOWLEDGED: "ACKNOWLEDGED", Transition.RESOLVED: "RESOLVED"}


def log_transition(
    alert: Alert, transition: Transition, why: str, actor: str, notices: int, silenced_by: str | None = None
) -> None:
    """Log ``alert``'s ``transition`` if it is one a person wants to hear of as it happens; ``silenced_by`` names
    the silence that kept it from notifying."""
    word = _WORDS.get(transition)
    if word is None:
        return
    text = f"alert {alert.rule_name!r} on {alert.monitor_name!r} ({alert.id}) is {word}"
    if why:
        text += f": {why}"
    if transition is not Transition.ACKNOWLEDGED:
        if notices:
            text += " (notification queued)"
        elif silenced_by:
            text += f" (no notification: silenced by {silenced_by})"
        else:
            text += " (no notification)"
    log.info(
        text,
        extra={
            "alert_id": alert.id,
            "rule_id": alert.rule_id,
            "monitor_id": alert.monitor_id,
            "owner_id": alert.owner_id,
            "transition": transition.value,
            "actor": actor,
        },
    )
