# featlearn — the two commands: `make reproduce` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
CONFIG ?= config/config.yaml
# The workflow profile (workflow/profiles/default) is loaded by Snakemake itself.
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES)

.PHONY: install reproduce report archive smoke rulegraph lint test bench clean

# (Re)create the virtual environment when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[nonlinear,test]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole default pipeline: every dataset and figure, then the report and the verified archive.
reproduce: $(STAMP)
	$(SNAKEMAKE) --configfile $(CONFIG)
	$(MAKE) report archive CONFIG=$(CONFIG)

## The HTML report of the last run: every figure with its caption, and the configuration.
report: $(STAMP)
	$(SNAKEMAKE) --configfile $(CONFIG) --report results/report.html

## Pack results/ (report included) into results/featlearn-archive.tar.gz and verify it.
## Forced: the report is not an input of the rule, so Snakemake cannot see it change.
archive: $(STAMP)
	$(SNAKEMAKE) archive --forcerun archive --configfile $(CONFIG)
	$(BIN)/featlearn verify results/featlearn-archive.tar.gz

## The tiny version of every experiment (a few minutes), then its report: open results/report.html.
smoke: $(STAMP)
	$(SNAKEMAKE) --configfile config/smoke.yaml
	$(SNAKEMAKE) --configfile config/smoke.yaml --report results/report.html

## The rule graph of the default pipeline, as Snakemake draws it: docs/rulegraph.dot and, with
## Graphviz's dot (Debian: graphviz), docs/rulegraph.svg. A fixed hash seed keeps the edge order
## stable between runs; tests/test_rulegraph.py checks that the committed graph is current.
## Drawn left to right: top to bottom, the figure rules make one row too wide to read.
rulegraph: $(STAMP)
	PYTHONHASHSEED=0 $(SNAKEMAKE) --rulegraph --configfile config/config.yaml > docs/rulegraph.dot
	dot -Grankdir=LR -Tsvg docs/rulegraph.dot -o docs/rulegraph.svg

## Lint and format checks of the Python sources and the workflow (no file is changed).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check workflow

## The test suite (after the lint checks).
test: lint
	$(BIN)/python -m pytest

## Speed benchmarks (ratios against a baseline measured in the same run).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_solvers.py

clean:
	rm -rf results logs .snakemake
