# diffcore: one command to set up and run, one to test. Everything installs into ./.venv with pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= runs/embedded
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: all setup run test clean

all: run

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: these two builds install from the local wheel cache (a newer one would download GBs)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

run: setup
	$(BIN)/python -m diffcore run --profile embedded --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build _build
