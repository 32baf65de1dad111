# Two commands on a fresh machine (Python 3.11 and the package registries):
#   make run    word count of the bundled sample, on the local backend
#   make test   lint, format check, types, layer contracts, then the test suite
# Each sets up .venv on first use (and again when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test lint check pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mrk8s run examples/wordcount.py examples/data/sample.txt

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shuffle scheduler mrk8s
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint pytest

# The peers bench/ compares with (Ray Data, Dask) and matplotlib for the charts.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Shuffle and word-count comparisons (about 30 minutes); results in bench/results/.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.compare_shuffle
	$(BIN)/python -m bench.compare_wordcount

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
