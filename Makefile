# forgeml: two commands on a fresh machine (see README.md).
#   make quickstart   set up .venv and run the quickstart lifecycle on shipped data
#   make test         set up .venv if needed and run the whole test suite

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.forgeml-installed
GGUF_STAMP := $(VENV)/.gguf-installed

.PHONY: quickstart test lint format bench setup gguf docs lock clean

quickstart: $(STAMP)
	$(BIN)/forgeml quickstart

# Two worker processes, a test file each at a time (module fixtures stay in one
# process): most tests wait on subprocesses and servers, so 2 cores run ~1.6x faster.
TEST_WORKERS ?= 2
test: $(STAMP) $(GGUF_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

setup: $(STAMP)

# docs/CONFIGURATION.md is generated from the models; a test fails when it is out of date.
docs: $(STAMP)
	$(BIN)/python -m forgeml.configuration_reference --write docs/CONFIGURATION.md

# Installs come from requirements.lock (every package at the version the tests passed
# with); pyproject.toml keeps ranges for library users. torch first, from its CPU wheel:
# anything that depends on torch then finds it installed instead of a multi-GB CUDA build.
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[dev]'
	touch $@

# Refresh the lock from this venv after changing dependencies in pyproject.toml and
# passing `make test`; tests/test_lock.py fails while the two disagree.
lock: $(STAMP)
	scripts/lock.sh $(BIN)/python > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

# llama.cpp's GGUF toolchain (export to GGUF, the llama.cpp engine): built once, cached.
gguf: $(GGUF_STAMP)

$(GGUF_STAMP): $(STAMP) scripts/install_gguf_toolchain.sh
	scripts/install_gguf_toolchain.sh $(BIN)/python
	touch $@

clean:
	rm -rf $(VENV) forgeml-workspace .pytest_cache .ruff_cache
