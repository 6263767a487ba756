# shoprec: `make run` (train on the synthetic shop and serve) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLUSTER_STAMP := $(VENV)/.cluster-installed
SPARK_STAMP := $(VENV)/.spark-installed
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
		--items data/shop/items.parquet --truth data/shop/truth --shop synthetic-$(PRESET) --metrics-out runs/metrics.json

run: train
	$(VENV)/bin/shoprec serve --host 127.0.0.1 --port $(PORT)

# What the tests start for real (Debian packages): redis-server, chromium for the marketers' page
# (driven by Playwright; never `playwright install`), postgresql and nginx for the cluster (make cluster),
# Java 17 for the Spark engine (features/relational/engine.py).
# Installed when we are root, with one apt-get update.
system-deps:
	@missing=""; \
	  command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	  command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing system packages:$$missing: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	  fi

# two pytest workers (pytest-xdist), one test file each at a time (module fixtures stay whole), the longest
# files first (tests/conftest.py): the servers the tests start wait on I/O much of the time, so on 2 cores the
# suite takes 20–25 minutes instead of 38
TEST_WORKERS ?= 2
test: $(STAMP) $(CLUSTER_STAMP) $(SPARK_STAMP) system-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The production topology on this machine (README "A cluster on one machine"): PostgreSQL, the MLflow server on
# it, Redis, two replicas (3001, 3002) behind nginx on 8080. State and logs in data/cluster/ (make clean keeps
# them: `make cluster-stop && rm -rf data/cluster`); cluster-stop ends exactly the processes cluster started.
.PHONY: cluster cluster-stop cluster-status
CLUSTER_BUDGET ?= 2

# the PostgreSQL driver of the MLflow server (make cluster and its test)
$(CLUSTER_STAMP): deploy/requirements.txt | $(STAMP)
	$(PY) -m pip install -q -r deploy/requirements.txt
	touch $(CLUSTER_STAMP)

# the optional extra `spark` (PySpark; Java from system-deps): the Spark engine's tests run in make test
$(SPARK_STAMP): requirements-spark.lock | $(STAMP)
	$(PY) -m pip install -q -r requirements-spark.lock
	touch $(SPARK_STAMP)

cluster: $(CLUSTER_STAMP) system-deps
	$(PY) -m deploy.cluster start --preset $(PRESET) --budget-minutes $(CLUSTER_BUDGET)

cluster-stop:
	$(PY) -m deploy.cluster stop

cluster-status:
	$(PY) -m deploy.cluster status

clean:
	rm -rf data/shop data/canonical runs mlruns bentoml_home

# Benchmarks next to their floors (benchmarks/README.md). bench-quick: small shops, a few minutes;
# bench: the full run (1M/10M/50M events, 1M-user model; ~45+ min). Results: benchmarks/results/.
.PHONY: bench bench-quick bench-deps
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): benchmarks/requirements.txt | $(STAMP)
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)

bench-quick: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --mode quick

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --mode full

# Recommendation quality on every synthetic shop kind and Online Retail, through the real CLI
# (benchmarks/quality.py): results in benchmarks/results/quality.{json,md}. QUICK=1: test sizes.
.PHONY: bench-quality
bench-quality: $(STAMP)
	$(PY) -m benchmarks.quality $(if $(QUICK),--quick)
