"""`python -m services.admin ...`: the operator commands of services/monitor_svc/accounts/admin.py, at the
name the README, the container image and scripts use (create-api-key, new-master-key, doctor)."""

from __future__ import annotations

import sys

from services.monitor_svc.accounts.admin import main

if __name__ == "__main__":
    sys.exit(main())
