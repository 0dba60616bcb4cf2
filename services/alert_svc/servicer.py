"""AlertService servicer. The contract is complete; behaviour arrives with its own issue, and until then every
RPC answers UNIMPLEMENTED (the generated base class), through the same auth and error chain as the rest."""

from monitors.v1 import alert_service_pb2_grpc


class AlertServiceServicer(alert_service_pb2_grpc.AlertServiceServicer):
    """Translates AlertService requests to the domain and back."""
