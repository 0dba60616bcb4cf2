# One image for every process: `docker build -t monitors .`, then `docker run monitors monitor` (or alert,
# notify, runner, mcp, admin: scripts/container-entrypoint.sh). Runs as uid 10001, ready for a read-only root
# filesystem (bytecode compiled at build; write only to $MONITORS_DATA_DIR and /tmp).

# Stage 1: the dependencies, in a virtualenv copied whole into the final image (no pip, no build tools there).
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --requirement /tmp/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip

# Stage 2: the runtime.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 monitors \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin monitors \
    && mkdir -p /var/lib/monitors \
    && chown 10001:10001 /var/lib/monitors
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gen/ gen/
COPY service_runtime/ service_runtime/
COPY services/ services/
COPY mcp_adapter/ mcp_adapter/
COPY scripts/container-entrypoint.sh scripts/container-entrypoint.sh
# The root filesystem is read-only in Kubernetes: compile now, as Python cannot write __pycache__ later.
RUN /opt/venv/bin/python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MONITORS_DATA_DIR=/var/lib/monitors \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
# gRPC: monitor, alert, notify, a runner's health; HTTP: heartbeat pings, InfluxDB ingest, the MCP adapter.
EXPOSE 50051 50052 50053 50054 50080 50082 8765
ENTRYPOINT ["/app/scripts/container-entrypoint.sh"]
CMD ["monitor"]
