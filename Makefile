# Two commands do everything on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
C360 := $(VENV)/bin/customer360
DB ?= data/customer360.duckdb
DEMO_CUSTOMERS ?= 50000
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns/mlflow.db

.PHONY: install install-test demo test lint serve stop clean

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

AS_OF ?= 2026-06-30

# The main job end to end on the embedded default: synthetic warehouse -> ingest with quarantine
# -> features -> segments -> probabilistic CLV -> churn/CLV training -> NBO -> batch scoring ->
# the service in the background with a sample call.
demo: install
	@mkdir -p out
	$(C360) generate --customers $(DEMO_CUSTOMERS) --seed 42 --db $(DB) --overwrite
	$(C360) ingest transactions docs/examples/new_transactions.csv --map order_id=transaction_id --db $(DB)
	$(C360) quarantine --table transactions --limit 5 --db $(DB)
	$(C360) features build --db $(DB) --as-of $(AS_OF) --output out/features.parquet
	$(C360) segments --as-of $(AS_OF) --db $(DB) --output out/segments.parquet
	$(C360) clv warehouse --as-of $(AS_OF) --db $(DB) --output out/clv_probabilistic
	$(C360) train churn --db $(DB) --trials 3 --snapshots 4 --step-days 90
	$(C360) train clv --db $(DB) --trials 3 --snapshots 4 --step-days 180
	-$(C360) promote churn
	-$(C360) promote clv
	$(C360) nbo train --db $(DB) --output out/nbo
	-$(C360) promote nbo
	$(C360) nbo simulate --db $(DB) --rounds 60 --batch-size 300
	$(C360) score --as-of $(AS_OF) --db $(DB) --output out/scores.parquet
	@scripts/demo_serve.sh stop >/dev/null 2>&1 || true
	DB=$(DB) scripts/demo_serve.sh start

# Two workers for two cores; --dist loadfile keeps a module's fixtures (servers, trained stores) in one worker.
test: install-test
	scripts/ensure_chromium.sh
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks

serve: install
	$(C360) serve --db $(DB)

stop:
	scripts/demo_serve.sh stop

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
