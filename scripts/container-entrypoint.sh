#!/bin/sh
# The container image's entrypoint: the first argument names the process, the rest are its own arguments.
#   docker run IMAGE monitor            docker run IMAGE runner
#   docker run IMAGE mcp --transport http --host 0.0.0.0
#   docker run IMAGE admin doctor
# Settings come from MONITORS_* environment variables (README, "Settings").
set -eu

usage="usage: $0 {monitor|alert|notify|runner|mcp|admin} [ARGUMENTS...]"
if [ "$#" -eq 0 ]; then
    echo "$usage" >&2
    exit 2
fi
name=$1
shift
case "$name" in
    monitor) module=services.monitor_svc ;;
    alert) module=services.alert_svc ;;
    notify) module=services.notify_svc ;;
    runner) module=services.monitor_svc.runner ;;
    mcp) module=mcp_adapter ;;
    admin) module=services.admin ;;
    *)
        echo "unknown process '$name'; $usage" >&2
        exit 2
        ;;
esac
# exec: the process is PID 1's only child, so SIGTERM from Kubernetes reaches it and starts its drain.
exec python -m "$module" "$@"
