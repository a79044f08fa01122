# The two commands of the README. Everything lives in ./.venv; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= The three primary colors are

.PHONY: demo test setup setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned on purpose: an unpinned `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks]"

demo: setup
	$(BIN)/minigemma generate "$(PROMPT)" --max-new-tokens 40

test: setup-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
