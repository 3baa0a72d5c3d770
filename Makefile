# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: setup demo test test-cluster system-deps clean

setup: system-deps $(STAMP)

# Debian packages the tests use, installed only where missing, and only as root (CI); elsewhere a
# note says what to run. PostgreSQL: the MLflow tracking server's backend in the cluster tests
# (tests/realparts.py). Chromium (/usr/bin/chromium): the browser Playwright drives in
# tests/test_demo.py and tests/test_browse.py (Playwright's own browser download is not used).
system-deps:
	@missing=""; \
	  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  if [ -z "$$missing" ]; then :; \
	  elif [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "note: missing Debian packages:$$missing; as root: apt-get install$$missing"; fi

# torch first, pinned: here it is a local CPU wheel; an unpinned torch pulled in by another
# package would be the newest CUDA build (several GB). Re-runs only when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# the smoke variant's architecture from pretrained zoo parts (experiments/demo.yaml). The zoo's
# tiny parts are built only where no zoo part of that name exists: a `zoo build` of another size
# (experiments/mini's, ~12 min) is never replaced by the demo's.
demo: setup
	test -f .vlmsweep/zoo/tinyllama/zoo.json -a -f .vlmsweep/zoo/siglip/zoo.json || \
	  $(VENV)/bin/vlmsweep zoo build --size tiny --only tinyllama,siglip --work-dir .vlmsweep
	$(VENV)/bin/vlmsweep run experiments/demo.yaml --work-dir .vlmsweep

# everything but the slow real-part suites; it still submits one sweep to a real 3-node cluster
# with S3 and a tracking server (tests/test_cluster.py)
SLOW := tests/test_realparts.py tests/test_cluster_faults.py

test: setup
	$(PY) -m pytest -q $(addprefix --ignore=,$(SLOW))

# the suites that start real parts on 127.0.0.1: a multi-node Ray cluster with token auth, an S3
# API server (moto), PostgreSQL and an MLflow tracking server; with the fault tests (node removed
# mid-stage, driver killed mid-sweep)
test-cluster: setup
	$(PY) -m pytest -q tests/test_realparts.py tests/test_submit.py tests/test_cluster.py tests/test_cluster_faults.py

clean:
	rm -rf .vlmsweep .pytest_cache
