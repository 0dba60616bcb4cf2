#!/usr/bin/env bash
# Installs the Prometheus stack that `make bench-compare` runs beside ours (Debian's prometheus,
# prometheus-blackbox-exporter, prometheus-alertmanager), but only the packages whose binaries are missing.
# The bench starts them itself as plain processes on loopback; the packaged daemons are never started.
set -euo pipefail

declare -A package_for=(
  [prometheus]=prometheus
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [prometheus-alertmanager]=prometheus-alertmanager
)

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ]; }

missing=()
for binary in "${!package_for[@]}"; do
  have "$binary" || missing+=("${package_for[$binary]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing Debian packages: ${missing[*]}" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
# The packages' postinst would start their daemons on the default ports: a policy forbids it.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  created_policy=1
fi
trap '[ $created_policy -eq 1 ] && "${sudo[@]}" rm -f "$policy"' EXIT
"${sudo[@]}" apt-get update -qq || echo "apt-get update failed; trying the cached package lists" >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
