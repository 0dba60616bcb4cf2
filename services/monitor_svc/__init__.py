"""The MonitorService process (it also serves AccountService): `python -m services.monitor_svc`."""

# Reported by GetDeploymentStatus and by runners; kept here so a runner need not import the server.
VERSION = "0.1.0"
