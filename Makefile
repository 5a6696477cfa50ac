# rocars: the two commands a new user needs are `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ROCARS := $(PY) -m deploy
PYTEST := $(VENV)/bin/pytest

.PHONY: install run stop status test unit coverage integration lint typecheck drills chaos fuzz bench lock clean

install:
	@bash deploy/install.sh

## Start the whole local system in the background and print its endpoints.
run: install
	@$(ROCARS) cluster up

stop:
	@if [ -x $(PY) ]; then $(ROCARS) cluster down; else echo "nothing installed, nothing to stop"; fi

status:
	@$(ROCARS) cluster status

## Install what is needed, then lint, type-check and run the test suite (CI runs this).
test: install lint typecheck
	@$(PYTEST) -m "not slow" -p no:cacheprovider --durations=30

unit: install
	@$(PYTEST) tests/unit -p no:cacheprovider

## Unit tests with branch coverage of every package ([tool.coverage] in pyproject.toml).
coverage: install
	@$(PYTEST) tests/unit -p no:cacheprovider --cov --cov-report=term

integration: install
	@$(PYTEST) -m "integration and not slow" -p no:cacheprovider

lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/lint-imports --no-cache

typecheck: install
	@$(VENV)/bin/mypy

## Long fault drills and benchmarks (not in CI's default run).
drills: install
	@$(PYTEST) -m "slow and not fuzz" -p no:cacheprovider

## The whole chaos suite (#14: chaos-tests/, slow scenarios included, a 300-second nemesis) under
## the cluster lock, then one Markdown row per scenario in var/artifacts/chaos/summary.md (the
## histories beside it). ROCARS_NEMESIS_S and ROCARS_NEMESIS_SEED change the nemesis run.
CHAOS_OUT := var/artifacts/chaos
chaos: install
	@rm -rf $(CHAOS_OUT) && mkdir -p $(CHAOS_OUT)/records
	@ROCARS_NEMESIS_S=$${ROCARS_NEMESIS_S:-300} ROCARS_CHAOS_REPORT_DIR=$(CURDIR)/$(CHAOS_OUT)/records \
	  ROCARS_CHAOS_HISTORY_DIR=$(CURDIR)/$(CHAOS_OUT)/histories \
	  flock /tmp/rocars-cluster.lock $(PYTEST) chaos-tests -p no:cacheprovider; rc=$$?; \
	  $(PY) -m deploy.chaos_summary $(CHAOS_OUT)/records $(CHAOS_OUT)/summary.md; exit $$rc

## schemathesis against a fresh local cluster's /openapi.json: at least 10,000 generated requests
## (every operation, stateful links), then the counts per operation and status.
fuzz: install
	@flock /tmp/rocars-cluster.lock $(PYTEST) tests/fuzz -m "fuzz and slow" -p no:cacheprovider

## Measure the running system (#11; starts it like `make run` when needed): one table, JSON and
## SVG under var/bench/, compared with the previous run. Under the cluster lock: load alone.
## BENCH_ARGS="--quick" or "--duration 5" for a shorter run.
bench: install
	@flock /tmp/rocars-cluster.lock $(ROCARS) bench $(BENCH_ARGS)

## Refresh requirements.lock from the current .venv (after changing pyproject.toml).
lock:
	@$(VENV)/bin/pip freeze --exclude-editable | grep -vi '^rocars' | \
	  { echo "# Fully pinned dependency set for rocars (runtime + dev). Regenerate with: make lock"; cat; } > requirements.lock

## Stop everything and remove the state: var/ and PostgreSQL's folder under /var/lib/rocars.
clean:
	@if [ -x $(PY) ]; then $(ROCARS) cluster down --purge; fi
	rm -rf var
