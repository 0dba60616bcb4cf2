"""The NotificationService process: `python -m services.notify_svc`."""
