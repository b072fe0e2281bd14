# CPU set-up: torch is pinned to the 2.13.0 CPU build so no multi-GB CUDA wheel is pulled.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install train test lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,notebook,cluster,tensorboard]"

train: install
	$(BIN)/python experiments/train_svi.py --out runs/default

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --nbmake tests notebooks

lint: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
