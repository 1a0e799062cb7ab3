# One command for each job, from a fresh clone:
#   make lab    set up, then JupyterLab on the tutorials with the embedded model ready
#   make test   set up (Chromium included), then the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU machine gets the CPU build of torch (a bare `torch` would pull a multi-GB CUDA build);
# a machine with an NVIDIA driver gets the default build. Override with `make TORCH=... setup`.
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
STAMP  := $(VENV)/.kanibook-installed
# JupyterLab refuses to run as root unless told to (containers, CI machines)
LAB_ARGS ?= $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup demo-model chromium lab test test-fast bench clean

setup: $(STAMP) demo-model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo-model: $(STAMP)
	$(BIN)/python -m kanibook.demo_model

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium fonts-dejavu-core; }

lab: setup
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

test: setup chromium
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not browser and not slow"

bench: setup
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-artifacts
