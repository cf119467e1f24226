# The workbook's two commands (see README.md):
#   make lab    install (first time) and open the workbook in JupyterLab
#   make test   install (first time) and run every test, notebooks included
# Headless equivalent of the workbook: make headless
PY ?= python3
VENV ?= .venv
# torch goes in first, so the ranges in requirements.txt don't pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PRESET ?= cpu
BIN := $(VENV)/bin

.PHONY: install lab headless test data

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

lab: install
	$(BIN)/jupyter lab labs/00_start_here.ipynb

headless: install
	$(BIN)/python -m labkit pipeline --preset $(PRESET) --report runs/report-$(PRESET).json

test: install
	LABKIT_PRESET=smoke $(BIN)/python -m pytest --nbval-lax -q tests labs

data: install
	$(BIN)/python -m labkit data build
