#!/usr/bin/env bash
# Installs Debian packages that the tests and benchmarks start themselves as throwaway processes, but only
# those whose binaries are missing. No argument: what the test suite and the benchmarks need (mariadbd,
# redis-server, influxd, h2load the gRPC load generator). `compare`: the Prometheus stack `make bench-compare`
# runs beside ours (prometheus, prometheus-blackbox-exporter, prometheus-alertmanager).
set -euo pipefail

declare -A package_for
case "${1:-servers}" in
  servers)
    package_for=(
      [mariadbd]=mariadb-server
      [mariadb-install-db]=mariadb-server
      [redis-server]=redis-server
      [influxd]=influxdb
      [h2load]=nghttp2-client
    )
    ;;
  compare)
    package_for=(
      [prometheus]=prometheus
      [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
      [prometheus-alertmanager]=prometheus-alertmanager
    )
    ;;
  *)
    echo "usage: $0 [servers|compare]" >&2
    exit 2
    ;;
esac

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

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
# Package installs must not start the packaged daemons (the tests and benches start their own on free ports).
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
