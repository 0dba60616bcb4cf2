#!/usr/bin/env bash
# Generates Python code, typed stubs and gRPC stubs from protos/ into the directory given (default gen/).
# Used by `make protos` and by the freshness test, so both run the same pinned command.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/gen}
py=${PYTHON:-$here/.venv/bin/python}
bin=$(dirname "$py")
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$here/protos"
# shellcheck disable=SC2046
PATH="$bin:$PATH" "$py" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  $(find monitors -name '*.proto' | LC_ALL=C sort)
