"""The tools, one module per area; importing this package registers them all (see toolbox.TOOLS)."""

from mcp_adapter.tools import account, alerts, channels, data, monitors, secrets

__all__ = ["account", "alerts", "channels", "data", "monitors", "secrets"]
