# Thin wrappers; the logic lives in `polygraph` (gateway/cli.py) and infra/local.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
POLYGRAPH := $(VENV)/bin/polygraph

.PHONY: help install install-test install-bench lock graphiql timescale federation run test checks bench stack-down clean

help:
	@echo "make run    start the dev stack and serve the gateway on http://127.0.0.1:8000"
	@echo "make test   start the test stack, then ruff, mypy and pytest (browser test included)"
	@echo "make stack-down   stop the dev, test and bench stores"
	@echo "make bench  benchmark the gateway (bench/results/latest.md)"

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Each command installs what it needs and no more (README, "Prerequisites"): Debian
# packages through infra/local/system-packages.sh, npm packages with `npm ci`, which
# checks each one against the integrity hash in its package-lock.json.
install: $(UV)
	@bash infra/local/system-packages.sh run
	@$(MAKE) --no-print-directory $(VENV)/.installed graphiql

install-test: $(UV)
	@bash infra/local/system-packages.sh test
	@$(MAKE) --no-print-directory $(VENV)/.installed graphiql timescale federation

install-bench: $(UV)
	@bash infra/local/system-packages.sh bench
	@$(MAKE) --no-print-directory $(VENV)/.installed graphiql

# requirements.lock pins every package by version and hash (exported from uv's lock,
# without index addresses); `make lock` refreshes it after pyproject.toml changes.
$(VENV)/.installed: requirements.lock pyproject.toml | $(UV)
	test -x $(VENV)/bin/python || $(UV) venv --quiet --python python3.11 $(VENV)
	$(UV) pip install --quiet --python $(VENV)/bin/python --require-hashes -r requirements.lock
	$(UV) pip install --quiet --python $(VENV)/bin/python --no-deps -e .
	touch $@

lock: $(UV)
	$(UV) lock --quiet
	$(UV) export --quiet --format requirements.txt --all-extras --all-groups --no-emit-project --frozen -o requirements.lock

# GraphiQL's browser files, served by the gateway (gateway/graphiql); no install scripts run.
# Installed under var/, outside the Python packages: third-party trees stay out of gateway/.
graphiql: var/graphiql/node_modules/.package-lock.json

var/graphiql/node_modules/.package-lock.json: gateway/graphiql/package.json gateway/graphiql/package-lock.json
	mkdir -p var/graphiql
	cp gateway/graphiql/package.json gateway/graphiql/package-lock.json var/graphiql/
	npm ci --prefix var/graphiql --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error

# TimescaleDB in WebAssembly (Node), for the metrics conformance tests; reinstalled
# only when the lock file changes.
timescale: infra/timescale/node_modules/.package-lock.json

infra/timescale/node_modules/.package-lock.json: infra/timescale/package-lock.json
	npm ci --prefix infra/timescale --no-audit --no-fund --loglevel=error

# Apollo's composition and gateway, for the federation test; no install scripts run.
federation: infra/federation/node_modules/.package-lock.json

infra/federation/node_modules/.package-lock.json: infra/federation/package-lock.json
	npm ci --prefix infra/federation --ignore-scripts --no-audit --no-fund --loglevel=error

run: install
	$(POLYGRAPH) stack up --profile dev
	$(POLYGRAPH) migrate
	$(POLYGRAPH) seed --if-empty
	$(POLYGRAPH) dev-key
	$(POLYGRAPH) serve

# The test stack runs for the checks only: whatever `stack run` had to start, it stops.
test: install-test
	$(POLYGRAPH) stack run --profile test -- $(MAKE) --no-print-directory checks

# The API tests run twice: the first run answers with the planned executor and compares
# every operation with graphql-core's own (tests/support/differential.py); the second runs
# them on graphql-core's executor alone.
checks:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(POLYGRAPH) schema check
	$(VENV)/bin/pytest -n 2 --dist loadfile
	POLYGRAPH_EXECUTOR=stock $(VENV)/bin/pytest -n 2 --dist loadfile -q tests/integration/api

# `polygraph bench --help` for options (e.g. BENCH_ARGS="--quick" or "--scale 0.1").
bench: install-bench
	$(POLYGRAPH) bench $(BENCH_ARGS)

stack-down:
	-$(POLYGRAPH) stack down --profile dev
	-$(POLYGRAPH) stack down --profile test
	-$(POLYGRAPH) stack down --profile bench

clean: stack-down
	rm -rf var $(VENV) $(TOOLS)
