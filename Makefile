# Everything installs from this file: on a fresh clone, `make repro` and `make test`
# need only python3.11 (and, for the browser and team-server tests, Debian's chromium and
# postgresql; see .ci/run).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv lock repro check-repro params dry-run test test-fast test-gpu gpu-check lint bench \
	bench-memory bench-gpu ui tracking-server clean

# mmcv (for detection/) is source-only on PyPI: compiled once per machine and user against
# our torch (~30 min on 2 cores) into a wheel cache outside the checkout, so that a second
# clone, or CI on the same machine, installs it in seconds. One folder per torch pin.
TORCH_PIN := $(shell sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml)
WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pcdarts-repro/wheels/torch-$(TORCH_PIN)
MMCV_WHEEL := $(WHEEL_CACHE)/mmcv-2.1.0-*.whl
PIP_VERSION := 26.3
UV_VERSION := 0.13.9
LOCK_TOOLS := $(VENV)/lock-tools

# Free disk (GiB) a new venv needs: measured 6.6 for .venv, nearly all of it torch's CUDA
# build and its NVIDIA libraries (the only torch 2.14.1 wheel for x86-64 Linux), and 0.35 in
# the temporary folder while mmcv compiles. Checked first, so a full disk fails in one line.
VENV_GB ?= 7

# requirements.lock pins every dependency of `.[dev,detection]` with its hashes, mmcv
# excepted (its wheel is built here, so its hash is this machine's): the venv installs
# exactly the lock, then the project and mmcv without dependencies, then `pip check`
# proves that mmcv's own requirements are met by the lock too.
$(STAMP): pyproject.toml requirements.lock scripts/build_mmcv_wheel.sh
	test -x $(BIN)/python || bash scripts/check_disk.sh . $(VENV_GB)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	ls $(MMCV_WHEEL) >/dev/null 2>&1 || bash scripts/build_mmcv_wheel.sh $(BIN)/python "$(WHEEL_CACHE)"
	$(BIN)/python -m pip install --quiet --no-deps $(MMCV_WHEEL)
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

## Re-solve requirements.lock from pyproject.toml with uv (keeps every pin that still fits;
## `make lock ARGS=--upgrade` moves all to the newest that fit). Needs PyPI and the mmcv wheel.
lock:
	ls $(MMCV_WHEEL) >/dev/null 2>&1 || { echo "no mmcv wheel in $(WHEEL_CACHE): run make venv" >&2; exit 1; }
	test -x $(LOCK_TOOLS)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOLS) \
		&& $(LOCK_TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml --extra dev --extra detection \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
		--find-links "$(WHEEL_CACHE)" --no-emit-package mmcv --custom-compile-command "make lock" \
		--quiet $(ARGS) -o requirements.lock

## The whole study on the default (tiny) profile: data, searches, derivation, training.
repro: $(STAMP)
	dvc repro

## Compare this workspace's results with the golden tiny run, expected/tiny.json (tolerances in
## the file): a line per value outside them; one line when the run used other CPU kernels.
check-repro: $(STAMP)
	python -m pipeline.golden check

## Compose params.yaml from conf/: `make params` (tiny), `make params ARGS="profile=paper"`.
params: $(STAMP)
	python -m stages.compose $(ARGS)

## Every stage through its own code for a few steps, then what the whole study costs on this
## machine (docs/dry-run.md); changes nothing DVC tracks. `make dry-run` runs params.yaml's,
## `make dry-run ARGS="profile=paper data.source=embedded device=cpu"` composes its own.
dry-run: $(STAMP)
	python -m pipeline.dry_run $(ARGS)

test: $(STAMP)
	python -m pytest

test-fast: $(STAMP)
	python -m pytest -m "not slow"

lint: $(STAMP)
	ruff check pcdarts detection stages pipeline reporting hydra_plugins tests benchmarks scripts
	mypy
	mypy benchmarks scripts hydra_plugins

bench: $(STAMP)
	python benchmarks/search_step.py

## The paper's memory claim: the search step for K = 1, 2, 4, 8 at batch 64 and 256 (a few minutes)
bench-memory: $(STAMP)
	python benchmarks/memory_k.py --json benchmarks/results/memory_k.json $(ARGS)

## On a CUDA machine: the bf16 / channels-last tests, and their search-step throughput.
test-gpu: $(STAMP)
	python -m pytest -m gpu

bench-gpu: $(STAMP)
	python benchmarks/search_throughput.py

## The prepared GPU check: needs only PyTorch and this checkout (scripts/gpu_check.sh runs
## without the venv too); the library-only gpu tests, bf16 throughput, the paper's forecast.
gpu-check:
	bash scripts/gpu_check.sh $(ARGS)

## The MLflow UI on this repository's tracking store: http://127.0.0.1:5000
ui: $(STAMP)
	bash scripts/mlflow_ui.sh

## A team's MLflow server (scripts/tracking_server.py): Debian's PostgreSQL on loopback as
## backend store, artifacts proxied; its data in DIR: `make tracking-server DIR=/srv/mlflow`
tracking-server: $(STAMP)
	$(if $(DIR),,$(error give the server's folder: make tracking-server DIR=/srv/pcdarts-mlflow))
	python scripts/tracking_server.py "$(DIR)" $(ARGS)

clean:
	rm -rf $(VENV)
