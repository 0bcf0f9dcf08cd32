# Two commands a newcomer needs: `make run` and `make test`. Both set up
# whatever is missing first (a Python 3.10 venv with the pinned stack).
PYTHON ?= python3.10
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

.PHONY: setup run test test-unit test-e2e bench-pipeline bench-quality bench-index clean

setup: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip==24.3.1'
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps recbole==1.2.1 scann==1.3.2
	@touch $@

run: $(STAMP)
	$(PY) -m pipeline.local_runner $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(RUN_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

bench-pipeline: $(STAMP)
	$(PY) -m benchmarks.bench_pipeline $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-quality: $(STAMP)
	$(PY) -m benchmarks.bench_quality $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-index: $(STAMP)
	$(PY) -m benchmarks.bench_index

clean:
	rm -rf outputs .pytest_cache
