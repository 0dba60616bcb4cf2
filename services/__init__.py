"""The monitors services. Each subpackage is its own process; they talk to each other over gRPC only."""
