"""The AlertService process: `python -m services.alert_svc`."""
