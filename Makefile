# monitors: the project's verbs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_RUNTIME := $(VENV)/.runtime-installed
STAMP_DEV := $(VENV)/.dev-installed
STAMP_NODE := node_modules/.installed

.PHONY: help run test drills lint protos bench bench-compare venv clean system-packages

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The repository and gen/ go on the virtualenv's path, so `python -m services.monitor_svc` and
# `from monitors.v1 import ...` work from anywhere.
$(STAMP_RUNTIME): requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -c 'import sysconfig, pathlib; p = pathlib.Path(sysconfig.get_path("purelib")) / "monitors.pth"; p.write_text("$(CURDIR)\n$(CURDIR)/gen\n")'
	touch $@

$(STAMP_DEV): requirements-dev.txt requirements.txt $(STAMP_RUNTIME)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(STAMP_NODE): package.json package-lock.json
	# npm ci installs exactly what the lock file pins and never rewrites it. The lock file lists buf's
	# binaries for every platform (npm picks this machine's), so a clean clone stays clean.
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

venv: $(STAMP_RUNTIME) ## Create the virtualenv with the runtime dependencies.

system-packages: ## Install mariadb-server, redis-server and influxdb if their binaries are missing.
	scripts/ensure-system-packages.sh

run: $(STAMP_RUNTIME) ## Start the whole system, embedded (SQLite, no setup); Ctrl-C stops it.
	$(PY) -m services.local_stack

protos: $(STAMP_DEV) ## Regenerate gen/ from protos/ with the pinned grpcio-tools and mypy-protobuf.
	rm -rf gen/monitors
	scripts/gen_protos.sh gen

lint: $(STAMP_DEV) $(STAMP_NODE) ## ruff (lint + format check), mypy strict, buf lint.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service_runtime services mcp_adapter tests harness bench
	npx --no-install buf lint

test: $(STAMP_DEV) $(STAMP_NODE) system-packages lint ## Install what the tests need, lint, run the whole suite.
	$(PY) -m pytest

drills: $(STAMP_DEV) system-packages ## Fault drills, full form (make test runs their short form): tests/drills/.
	MONITORS_DRILL=full $(PY) -m pytest tests/drills

bench: $(STAMP_DEV) system-packages ## Run the benchmarks; figures go to bench/results/*.json.
	$(PY) -m bench.grpc_bench
	$(PY) -m bench.timeseries_bench
	$(PY) -m bench.notify_bench
	$(PY) -m bench.runner_bench
	$(PY) -m bench.alerting_bench
	$(PY) -m bench.mcp_bench
	$(PY) -m bench.alerting_e2e_bench

bench-compare: $(STAMP_DEV) ## Ours vs Prometheus + blackbox_exporter + Alertmanager on this machine (bench/results/compare.*).
	scripts/ensure-compare-packages.sh
	$(PY) -m bench.compare

clean: ## Remove the virtualenv, node_modules and local data.
	rm -rf $(VENV) node_modules .data .cache
