"""`python -m mcp_adapter`: see mcp_adapter.cli."""

import sys

from mcp_adapter.cli import main

sys.exit(main())
