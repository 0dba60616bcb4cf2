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
mkdir -p "$out/monitors/v1"
cd "$here/protos"
# The descriptor set keeps the comments (source info) for server reflection: `grpcurl describe` shows them.
# shellcheck disable=SC2046
PATH="$bin:$PATH" "$py" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  --descriptor_set_out="$out/monitors/v1/descriptor_set.binpb" --include_source_info --include_imports \
  $(find monitors -name '*.proto' | LC_ALL=C sort)
