# Two commands do everything on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
C360 := $(VENV)/bin/customer360
DB ?= data/customer360.duckdb
DEMO_CUSTOMERS ?= 50000
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns/mlflow.db

.PHONY: install install-test demo test lint serve bench clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.base pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(C360) generate --customers $(DEMO_CUSTOMERS) --seed 42 --db $(DB)

test: install-test
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks

serve: install
	$(C360) serve --db $(DB)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
