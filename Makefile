# forgeml: two commands on a fresh machine (see README.md).
#   make quickstart   set up .venv and run the quickstart lifecycle on shipped data
#   make test         set up .venv if needed and run the whole test suite

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.forgeml-installed
GGUF_STAMP := $(VENV)/.gguf-installed

.PHONY: quickstart test lint format bench setup gguf docs clean

quickstart: $(STAMP)
	$(BIN)/forgeml quickstart

test: $(STAMP) $(GGUF_STAMP)
	$(BIN)/python -m pytest

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

# torch first, from its CPU wheel: anything that depends on torch then finds it installed
# instead of pulling a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# llama.cpp's GGUF toolchain (export to GGUF, the llama.cpp engine): built once, cached.
gguf: $(GGUF_STAMP)

$(GGUF_STAMP): $(STAMP) scripts/install_gguf_toolchain.sh
	scripts/install_gguf_toolchain.sh $(BIN)/python
	touch $@

clean:
	rm -rf $(VENV) forgeml-workspace .pytest_cache .ruff_cache
