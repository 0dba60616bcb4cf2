"""`python -m services.monitor_svc [--listen HOST:PORT]`: serve MonitorService and AccountService."""

import sys

from service_runtime.server import run_service
from services.monitor_svc.server import build_server

sys.exit(run_service("monitor", build_server))
