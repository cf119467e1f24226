# The workbook's two commands (see README.md):
#   make lab    install (first time) and open the workbook in JupyterLab
#   make test   install (first time) and run every test, notebooks included (preset smoke; not the slow tier)
# The slow tier: make test-slow (each lab's effects asserted at the cpu preset; CI runs it after make test)
# Headless equivalent of the workbook: make headless
# Choose a preset for either with PRESET=smoke|cpu|gpu|hub (make lab: unset = cpu, on a GPU too for now).
PY ?= python3
VENV ?= .venv
# torch goes in first, so the ranges in requirements.txt don't pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PRESET ?=
BIN := $(VENV)/bin
# JupyterLab refuses to start as root (as in many containers) unless told it may.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: install lab headless test test-slow data

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

lab: install
	$(if $(PRESET),LABKIT_PRESET=$(PRESET)) $(BIN)/jupyter lab $(ROOT_FLAG) labs/00_start_here.ipynb

headless: install
	$(BIN)/python -m labkit pipeline --preset $(or $(PRESET),cpu) --report runs/report-$(or $(PRESET),cpu).json

test: install
	LABKIT_PRESET=smoke $(BIN)/python -m pytest --nbval-lax -q -m "not slow" tests labs

# Uses the stage cache in LABKIT_HOME (default ~/.cache/labkit); from an empty cache it first trains
# the whole cpu pipeline, then measures every demonstration the course quotes and compares it with results/cpu.json
# (the reference run's times, on 2 cores: results/cpu.json, "seconds").
test-slow: install
	LABKIT_PRESET=cpu LABKIT_TEST_KEEP_HOME=1 $(BIN)/python -m pytest -q -m slow --durations=0 tests

data: install
	$(BIN)/python -m labkit data build
