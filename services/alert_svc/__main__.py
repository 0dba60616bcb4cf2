"""`python -m services.alert_svc [--listen HOST:PORT]`: serve AlertService until SIGTERM/SIGINT."""

import sys

from service_runtime.server import run_service
from services.alert_svc.server import build_server

sys.exit(run_service("alert", build_server))
