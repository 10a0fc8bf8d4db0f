# featlearn — the two commands: `make reproduce` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
CONFIG ?= config/config.yaml
SNAKEMAKE := $(BIN)/snakemake --profile workflow/profiles/default --cores $(CORES)

.PHONY: install reproduce smoke test bench clean

# (Re)create the virtual environment when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole default pipeline: every dataset and figure.
reproduce: $(STAMP)
	$(SNAKEMAKE) --configfile $(CONFIG)

## The tiny version of every experiment (under 3 minutes).
smoke: $(STAMP)
	$(SNAKEMAKE) --configfile config/smoke.yaml

## The test suite.
test: $(STAMP)
	$(BIN)/python -m pytest

## Speed benchmarks (ratios against a baseline measured in the same run).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_solvers.py

clean:
	rm -rf results logs .snakemake
