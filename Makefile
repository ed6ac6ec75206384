# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if
# it is missing (or older than the project's dependency files) and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pixgen-installed

.PHONY: demo test lint docs clean-venv

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir -c constraints.txt -e '.[dev]'
	# taming's modules only: --no-deps keeps pytorch-lightning (which pixgen never
	# imports) out of the environment.
	$(BIN)/python -m pip install -q --no-cache-dir -c constraints.txt --no-deps 'taming-transformers-rom1504==0.0.6'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pixgen run recipes/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/python -m pixgen.docgen docs/recipe-reference.md

clean-venv:
	rm -rf $(VENV)
