# shoprec: `make run` (train on the synthetic shop and serve) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1
export BENTOML_HOME ?= $(CURDIR)/bentoml_home
export BENTOML_DO_NOT_TRACK ?= true
export MLFLOW_ENABLE_TELEMETRY ?= false
export DO_NOT_TRACK ?= true
PORT ?= 3000
PRESET ?= small

.PHONY: venv run train test clean system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

data/shop/orders.parquet: | $(STAMP)
	$(VENV)/bin/shoprec generate --preset $(PRESET) --out data/shop

train: data/shop/orders.parquet
	$(VENV)/bin/shoprec train --orders data/shop/orders.parquet --events data/shop/events.parquet \
		--items data/shop/items.parquet --truth data/shop/truth --metrics-out runs/metrics.json

run: train
	$(VENV)/bin/shoprec serve --host 127.0.0.1 --port $(PORT)

# Servers the tests start for real: redis-server (Debian package). Installed when we are root.
system-deps:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: sudo apt-get install -y redis-server" >&2; exit 1; fi; }

test: $(STAMP) system-deps
	$(PY) -m pytest -q

clean:
	rm -rf data/shop data/canonical runs mlruns bentoml_home
