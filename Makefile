# Two commands: `make demo` (end to end on synthetic data) and `make test` (lint + test suite).
# Both create .venv on first use; the stamp is redone when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
WORKDIR ?= work/demo
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rpm demo --workdir $(WORKDIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/python -m pytest -q

# Every bench script in turn, default options; each writes bench/results/<name>.json (docs/benchmarks.md).
bench: $(STAMP)
	set -e; for script in bench/*_bench.py; do echo "== $$script"; $(VENV)/bin/python $$script; done

clean-demo:
	rm -rf $(WORKDIR)
