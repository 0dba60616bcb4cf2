#!/usr/bin/env bash
# Installs the Prometheus stack that `make bench-compare` runs beside ours, where its binaries are missing.
exec "$(dirname "$0")/ensure-system-packages.sh" compare
