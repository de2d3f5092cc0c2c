# Thin wrappers; the logic lives in `polygraph` (gateway/cli.py) and infra/local.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
POLYGRAPH := $(VENV)/bin/polygraph

.PHONY: help install system-packages run test lint typecheck bench stack-down clean

help:
	@echo "make run    start the dev stack and serve the gateway on http://127.0.0.1:8000"
	@echo "make test   start the test stack, then ruff, mypy and pytest"
	@echo "make stack-down   stop the dev and test stores"

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

system-packages:
	@bash infra/local/system-packages.sh

install: $(UV) system-packages
	$(UV) sync --frozen --python python3.11 --quiet

run: install
	$(POLYGRAPH) stack up --profile dev
	$(POLYGRAPH) migrate
	$(POLYGRAPH) seed --if-empty
	$(POLYGRAPH) dev-key
	$(POLYGRAPH) serve

test: install
	POLYGRAPH_PROFILE=test $(POLYGRAPH) stack up
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(POLYGRAPH) schema check
	$(VENV)/bin/pytest -n 2 --dist loadfile

stack-down:
	-POLYGRAPH_PROFILE=dev $(POLYGRAPH) stack down
	-POLYGRAPH_PROFILE=test $(POLYGRAPH) stack down

clean: stack-down
	rm -rf var $(VENV) $(TOOLS)
