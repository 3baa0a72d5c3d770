# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: setup demo test clean

setup: $(STAMP)

# torch first, pinned: here it is a local CPU wheel; an unpinned torch pulled in by another
# package would be the newest CUDA build (several GB). Re-runs only when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vlmsweep run experiments/smoke/variant.yaml

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf .vlmsweep .pytest_cache
