# Everything installs from this file: on a fresh clone, `make repro` and `make test`
# need only python3.11 (and, for the browser test, Debian's chromium; see .ci/run).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv repro params test test-fast test-gpu lint bench bench-gpu ui clean

# mmcv (for detection/) is source-only on PyPI: compiled once per machine and user against
# our torch (~30 min on 2 cores) into a wheel cache outside the checkout, so that a second
# clone, or CI on the same machine, installs it in seconds. One folder per torch pin.
TORCH_PIN := $(shell sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml)
WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pcdarts-repro/wheels/torch-$(TORCH_PIN)
MMCV_WHEEL := $(WHEEL_CACHE)/mmcv-2.1.0-*.whl

$(STAMP): pyproject.toml scripts/build_mmcv_wheel.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	ls $(MMCV_WHEEL) >/dev/null 2>&1 || bash scripts/build_mmcv_wheel.sh $(BIN)/python "$(WHEEL_CACHE)"
	$(BIN)/python -m pip install --quiet --find-links "$(WHEEL_CACHE)" -e '.[dev,detection]'
	touch $(STAMP)

venv: $(STAMP)

## The whole study on the default (tiny) profile: data, searches, derivation, training.
repro: $(STAMP)
	dvc repro

## Compose params.yaml from conf/: `make params` (tiny), `make params ARGS="profile=paper"`.
params: $(STAMP)
	python -m stages.compose $(ARGS)

test: $(STAMP)
	python -m pytest

test-fast: $(STAMP)
	python -m pytest -m "not slow"

lint: $(STAMP)
	ruff check pcdarts detection stages tests benchmarks
	mypy

bench: $(STAMP)
	python benchmarks/search_step.py

## On a CUDA machine: the bf16 / channels-last tests, and their search-step throughput.
test-gpu: $(STAMP)
	python -m pytest -m gpu

bench-gpu: $(STAMP)
	python benchmarks/search_throughput.py

## The MLflow UI on this repository's tracking store: http://127.0.0.1:5000
ui: $(STAMP)
	bash scripts/mlflow_ui.sh

clean:
	rm -rf $(VENV)
