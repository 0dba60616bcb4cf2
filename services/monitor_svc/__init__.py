"""The MonitorService process (it also serves AccountService): `python -m services.monitor_svc`."""
