# The two commands a newcomer runs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TAXI_DATA_DIR ?= $(CURDIR)/data
DAGSTER_HOME ?= $(TAXI_DATA_DIR)/dagster_home
LOCAL_ENV := TAXI_DATA_DIR=$(TAXI_DATA_DIR) DAGSTER_HOME=$(DAGSTER_HOME)

.PHONY: install demo test test-extended test-fast test-dagster dev serve worker bench clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install  ## the whole graph for a few partitions, offline, from the bundled sample mirror
	$(LOCAL_ENV) $(BIN)/taxi-assets-demo

test: install  ## lint, then the test suite (it starts its own HTTP mirror, GCS / BigQuery emulators, PostgreSQL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -m "not extended" --durations=15

test-extended: install  ## the image and compose on podman, the Celery deployment on Redis (CI runs them after make test)
	$(BIN)/pytest -m extended --durations=15

test-fast: install  ## the suite without the slow end-to-end tests (dagster dev, the deployment)
	$(BIN)/pytest -m "not slow"

# Dagster sets to try (a version names its set: docs/development.md#other-dagster-versions): the newest
# complete set on PyPI when written (dagster 1.13.29 has no dagster-celery 0.29.29), and the previous patch.
DAGSTER_VERSIONS ?= 1.13.27 1.13.26
test-dagster: install  ## the upgrade tests of Dagster's internals and the fast suite on other Dagster versions, each in a throwaway venv
	$(BIN)/python .ci/dagster_versions.py $(DAGSTER_VERSIONS)

dev: install  ## the Dagster UI on http://127.0.0.1:3000 (dg dev; on make demo's data, with its sample mirror)
	umask 077 && $(LOCAL_ENV) $(BIN)/python -m taxi_assets.dev -h 127.0.0.1  # run storage and logs private

serve: install  ## the production instance: code server, webserver, daemon on PostgreSQL (needs DAGSTER_PG_URL; with DAGSTER_CELERY_BROKER_URL, runs go to `make worker`)
	TAXI_DATA_DIR=$(TAXI_DATA_DIR) $(BIN)/python deploy/serve.py

worker: install  ## one Celery worker for the production instance (needs DAGSTER_PG_URL, DAGSTER_CELERY_BROKER_URL)
	TAXI_DATA_DIR=$(TAXI_DATA_DIR) $(BIN)/python deploy/worker.py

bench: install  ## seed vs ours on generated 1.37M- and 7.7M-row yellow months, ours on the 23M-row fhv month, the backfill (~10 minutes; files cached in bench/)
	$(BIN)/python benchmarks/run.py --fhv-rows 23143222 --backfill 93

clean:
	rm -rf $(TAXI_DATA_DIR)

.PHONY: image
image:  ## the deployment's image from Containerfile, with podman or docker (IMAGE=name, BASE=base image, PIP_CERT, PIP_INDEX_URL: a build secret, never in the image)
	@engine=$$(command -v podman || command -v docker) || { echo "make image: needs podman or docker" >&2; exit 1; }; \
	args="--build-arg BASE=$${BASE:-python:3.11-slim}"; \
	if [ -n "$${PIP_INDEX_URL:-}" ]; then secret=$$(mktemp) && trap 'rm -f "$$secret"' EXIT && \
	  printf '%s' "$$PIP_INDEX_URL" > "$$secret" && args="$$args --secret id=pip_index_url,src=$$secret"; fi; \
	case "$$engine" in *podman) args="$$args --network host"; \
	  if [ -n "$${PIP_CERT:-}" ]; then args="$$args -v $$PIP_CERT:/etc/pip-ca.crt:ro --build-arg PIP_CERT=/etc/pip-ca.crt"; fi;; esac; \
	set -x; $$engine build -f Containerfile -t $${IMAGE:-taxi-assets:latest} $$args .
