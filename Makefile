# diffcore: one command to set up and run, one to test. Everything installs into ./.venv with pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= runs/embedded
CHROMIUM := $(VENV)/chromium/chromium
MATHJAX := $(VENV)/mathjax/tex-chtml.js
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

REHEARSAL ?= runs/rehearsal

.PHONY: all setup run book reproduce main check-book lab test rehearse mutants clean

all: run

setup: $(VENV)/.installed $(CHROMIUM) $(MATHJAX)

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: these two builds install from the local wheel cache (a newer one would download GBs)
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[test,book]"
	touch $@

# Debian's chromium unpacked into .venv/chromium (no root needed once apt has its lists), for the book check
$(CHROMIUM): scripts/install_chromium.sh | $(VENV)/.installed
	bash scripts/install_chromium.sh $(VENV)/chromium

# MathJax 3 from npm into .venv/mathjax: the book's equations render offline (without npm: MathJax's CDN)
$(MATHJAX): scripts/install_mathjax.sh
	bash scripts/install_mathjax.sh $(VENV)/mathjax

# every notebook through papermill, then the book (runs/embedded/book/_build/html), checked in Chromium
run: setup
	$(BIN)/python -m diffcore.reproduce --profile embedded --out $(OUT)
	$(MAKE) --no-print-directory check-book

book reproduce: run

# only the main job: generate, train vanilla and DiffCoRe-Mix-50/-100, print the table
main: setup
	$(BIN)/python -m diffcore run --profile embedded --out $(OUT)

check-book:
	@if [ -x $(CHROMIUM) ] || [ -x /usr/bin/chromium ] || [ -n "$$DIFFCORE_CHROMIUM" ]; then \
	$(BIN)/python scripts/check_book.py $(OUT)/book/_build/html; \
	else echo "check-book: skipped, no Chromium (scripts/install_chromium.sh could not unpack Debian's chromium)"; fi

# JupyterLab on notebooks/: change a notebook's parameters cell and run it top to bottom (it writes to runs/embedded).
# It prints the URL with its token; root (a container) needs --allow-root. From another machine:
# make lab LAB_FLAGS="--ip 0.0.0.0 --port 8888 --no-browser", or an SSH tunnel (book/intro.md, "Run it")
LAB_FLAGS ?=
lab: setup
	@echo "make lab: JupyterLab on notebooks/; open the http://...?token=... URL it prints below (Ctrl+C twice stops it)"
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

# ruff (lint + format check) and the import-layer contracts first: seconds, and they fail before the tests run;
# then the tests, then the tiny rehearsal of the paper profile (every paper job and page on stand-ins)
test: setup
	$(BIN)/ruff check diffcore tests scripts benchmarks
	$(BIN)/ruff format --check diffcore tests scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory rehearse

# every job of the paper plan on stand-ins in the real formats (random weights, a few images per class), then every
# notebook on the paper profile and the paper book, checked in Chromium; from scratch each time (--fresh)
rehearse: setup
	$(BIN)/python -m diffcore rehearse --out $(REHEARSAL) --size tiny --fresh

# mutation testing of the method's core (not part of `make test`): mutmut over the functions listed in pyproject.toml,
# the score per module, and every surviving mutant killed or listed as equivalent in tests/MUTANTS.md.
# Takes about an hour on a 2-core machine (1868 mutants; measured 2026-12-01, see tests/MUTANTS.md).
mutants: setup
	$(BIN)/python -m pip install -q "mutmut>=3.8,<4"
	nice -n 10 $(BIN)/python scripts/mutants.py run --max-children 2

clean:
	rm -rf $(VENV) runs build _build mutants
