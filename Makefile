# The two README commands and the few others a contributor needs. Recipes only call tools;
# the logic lives in the `ml` package, dvc.yaml and the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE ?= 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: help setup quickstart pipeline pipeline-all test test-unit lint benchmarks docs clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# constraints.txt pins torch to the CPU build; nothing may upgrade it.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the package with dev tools

quickstart: setup pipeline  ## fresh machine: set up, then run the default model's pipeline

# The default model only: all three models take over 20 minutes on 2 cores (pipeline-all).
pipeline: setup  ## run the default model's pipeline (dvc repro report@madewithml)
	dvc repro report@madewithml

pipeline-all: setup  ## run every declared model's pipeline (dvc repro)
	dvc repro

test: setup  ## lint, then every test (the command CI runs)
	pre-commit run --all-files --show-diff-on-failure
	pytest

test-unit: setup  ## unit and property tests only (no clusters, servers or shared datasets)
	pytest -m "not integration"

lint: setup  ## pre-commit hooks only
	pre-commit run --all-files

benchmarks: setup  ## speed measurements -> reports/benchmarks/
	for script in benchmarks/*.py; do python $$script || exit 1; done

docs: setup  ## build the documentation site (offline, strict)
	mkdocs build --strict

clean:  ## remove generated outputs (keeps .venv)
	rm -rf data models ray_results mlruns mlflow.db site \
		$(filter-out reports/benchmarks reports/README.md,$(wildcard reports/*))
