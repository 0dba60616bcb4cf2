"""`python -m services.notify_svc [--listen HOST:PORT]`: serve NotificationService until SIGTERM/SIGINT."""

import sys

from service_runtime.server import run_service
from services.notify_svc.server import build_server

sys.exit(run_service("notify", build_server))
