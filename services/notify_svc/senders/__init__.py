"""Senders: one module per provider, each behind the :class:`~services.notify_svc.senders.base.Sender` protocol."""
