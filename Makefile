# Two commands a newcomer needs: `make run` and `make test`. Both set up
# whatever is missing first (a Python 3.10 venv with the pinned stack).
PYTHON ?= python3.10
# bash for pipefail: a failed pip install fails setup through the filter below.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Use the shared copy of ML-100K when it is there; otherwise ExampleGen
# downloads it, or offline takes the copy in the recbole wheel.
DATA_DIR ?= $(or $(MOVIELENS_DATA_DIR),$(wildcard ../shared/data/ml-100k))
PYTEST_ARGS ?=

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONWARNINGS := ignore::FutureWarning,ignore::DeprecationWarning
export MOVIELENS_DATA_DIR := $(DATA_DIR)

.PHONY: setup lint chromium redis-server wrk run serve feature-store app test test-unit test-e2e test-compile \
	bench-pipeline bench-quality bench-index bench-serving bench-scale bench-feature-store clean

setup: $(STAMP)

# pip warns once per package about index locations in a machine's pip.conf
# that do not exist (hundreds of lines on the CI machines); the rest of what
# pip says, errors and conflicts included, still shows.
PIP_NOISE := is ignored: it is neither a file nor a directory
# Installed without their dependencies (the Dockerfile installs the same; a test keeps them equal).
NO_DEPS := recbole==1.2.1 scann==1.3.2
$(STAMP): setup.py constraints.txt
	@echo 'Setting up $(VENV) with the pinned stack (once; a few minutes)...'
	@set -o pipefail; { test -x $(PY) || $(PYTHON) -m venv $(VENV); } && \
	  { $(PY) -m pip install -q --upgrade 'pip==24.3.1' && \
	    $(PY) -m pip install -q -c constraints.txt -e '.[dev]' && \
	    $(PY) -m pip install -q --no-deps $(NO_DEPS); } 2>&1 | sed '/$(PIP_NOISE)/d'
	@touch $@

run: $(STAMP)
	$(PY) -m pipeline.local_runner $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(RUN_ARGS)

# The local REST server over the newest pushed model (run `make run` first).
MODEL_BASE_PATH ?= outputs/serving/movielens_ranking
serve: $(STAMP)
	$(PY) -m serving.server --model-base-path $(MODEL_BASE_PATH) $(SERVE_ARGS)

# The online feature store, seeded from ML-100K by ExampleGen's readers: a
# SQLite file next to the served models (FEATURE_STORE=redis://host:port/0
# for Redis). It prints what it loaded and every row it skipped.
FEATURE_STORE ?= $(dir $(MODEL_BASE_PATH))feature_store.sqlite
feature-store: $(STAMP)
	$(PY) -m serving.feature_store bootstrap --store $(FEATURE_STORE) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# The model app (docs/app.md): the server over the newest pushed model with the
# feature store (seeded on first use); open the URL it prints.
app: $(STAMP)
	@test -e $(FEATURE_STORE) || $(MAKE) feature-store
	@echo 'Model app: http://127.0.0.1:8501/app/'
	$(PY) -m serving.server --model-base-path $(MODEL_BASE_PATH) --feature-store $(FEATURE_STORE) $(SERVE_ARGS)

# The feature store's tests and benchmark start Debian's redis-server.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; } || \
	  { echo 'redis-server is missing: sudo apt-get install -y redis-server'; exit 1; }

# The evaluation report's tests render it in headless Chromium.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } || \
	  { echo 'Chromium is missing: sudo apt-get install -y chromium'; exit 1; }

# ruff.toml: one line length and pyflakes' checks, before any test runs.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) chromium redis-server lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) chromium redis-server
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-e2e: $(STAMP) chromium redis-server
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

test-compile: $(STAMP)
	$(PY) -m pytest -m compile $(PYTEST_ARGS)

bench-pipeline: $(STAMP)
	$(PY) -m benchmarks.bench_pipeline $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-quality: $(STAMP)
	$(PY) -m benchmarks.bench_quality $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-index: $(STAMP)
	$(PY) -m benchmarks.bench_index

# wrk drives bench-serving; installed from Debian when root, as chromium is.
wrk:
	@command -v wrk >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk; } || \
	  { echo 'wrk is missing: sudo apt-get install -y wrk'; exit 1; }

# Serves the newest pushed model under outputs/ (run `make run` first) and
# loads it with 50 connections on loopback, under wrk and a Python generator.
# BENCH_SERVING_ARGS: e.g. --model-base-path /tmp/out/serving/movielens_ranking
bench-serving: $(STAMP) wrk
	$(PY) -m benchmarks.bench_serving $(BENCH_SERVING_ARGS)

# 100K, 1M and 10M synthetic ratings (10M only when 1M projects it under 25
# min a stage). BENCH_SCALE_ARGS: e.g. --sizes 100000,1000000
bench-scale: $(STAMP)
	$(PY) -m benchmarks.bench_scale $(BENCH_SCALE_ARGS)

# Ingest rate of the Redis-stream consumer and by-id lookup latency, SQLite and
# Redis; then, over HTTP on the newest pushed model (run `make run` first), wrk
# at 50 connections: recommend by id against recommend with full features, and
# the ratings route. Writes docs/results/feature_store.{json,md}.
# BENCH_FEATURE_STORE_ARGS: e.g. --no-http, or --duration-s 8
bench-feature-store: $(STAMP) redis-server wrk
	$(PY) -m benchmarks.bench_feature_store $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	  --model-base-path $(MODEL_BASE_PATH) $(BENCH_FEATURE_STORE_ARGS)

clean:
	rm -rf outputs .pytest_cache
