"""The MCP adapter: every capability of monitors as tools Claude can call, over stdio or streamable HTTP.

A plain gRPC client of the services: it imports the generated code (``monitors.v1``) and its own modules only.
"""

VERSION = "0.1.0"
