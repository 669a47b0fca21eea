# liveport — the two set-up commands of the README are `make demo` and `make test`; both
# install what they need (scripts/setup.sh is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: all setup setup-bench demo test check unit lab-tests bench clean

all: test

setup:
	@scripts/setup.sh test

setup-bench:
	@scripts/setup.sh test,bench

demo: setup-bench
	$(BIN)/liveport demo

check: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: check
	$(BIN)/pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: setup-bench
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
