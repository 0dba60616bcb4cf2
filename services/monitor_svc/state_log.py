"""One line when a monitor goes DOWN or comes back UP, for the person watching (``make run``'s terminal) and the
production log alike (logger ``monitors.events.monitor``)."""

from __future__ import annotations

from datetime import timedelta

from service_runtime.logs import event_log
from services.monitor_svc.domain import Monitor, MonitorState, MonitorStatus

log = event_log("monitor")
_SAID = (MonitorState.UP, MonitorState.DOWN)  # PENDING (first checks, failures within retries) is not news


def log_state_change(monitor: Monitor, before: MonitorStatus, after: MonitorStatus) -> None:
    """Log ``monitor`` going from ``before`` to ``after`` if it came UP or went DOWN."""
    if after.state == before.state or after.state not in _SAID:
        return
    result = after.last_result
    text = f"monitor {monitor.display_name!r} ({monitor.id}) is {after.state.value.upper()}"
    if after.state is MonitorState.DOWN and result is not None:
        text += f": {result.message or result.error_class}"
    elif before.state is MonitorState.DOWN and before.state_change_time and after.state_change_time:
        text += f" again after {_duration(after.state_change_time - before.state_change_time)} DOWN"
    log.info(
        text,
        extra={
            "monitor_id": monitor.id,
            "owner_id": monitor.owner_id,
            "state": after.state.value,
            "previous_state": before.state.value,
            "error_class": result.error_class if result is not None else "",
        },
    )


def _duration(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
