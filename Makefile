# The two commands a newcomer runs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TAXI_DATA_DIR ?= $(CURDIR)/data
DAGSTER_HOME ?= $(TAXI_DATA_DIR)/dagster_home
LOCAL_ENV := TAXI_DATA_DIR=$(TAXI_DATA_DIR) DAGSTER_HOME=$(DAGSTER_HOME)

.PHONY: install demo test dev bench clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install  ## the whole graph for a few partitions, offline, from the bundled sample mirror
	$(LOCAL_ENV) $(BIN)/taxi-assets-demo

test: install  ## lint, then the test suite (it starts its own HTTP mirror and GCS / BigQuery emulators)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

dev: install  ## the Dagster UI on http://127.0.0.1:3000
	mkdir -p $(DAGSTER_HOME) && cp -n taxi_assets/dagster.yaml $(DAGSTER_HOME)/
	$(LOCAL_ENV) $(BIN)/dagster dev -w workspace.yaml

bench: install  ## seed vs ours on generated 1.37M- and 7.7M-row months (~6 minutes; files cached in bench/)
	$(BIN)/python benchmarks/run.py --backfill 93

clean:
	rm -rf $(TAXI_DATA_DIR)
