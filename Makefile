# The README's two commands: `make scan` (set up, then score a sample log with the shipped model)
# and `make test` (set up, then run the test suite). Everything else is optional.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup scan demo test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first, pinned to the CPU build: a bare "torch" requirement resolved with nothing
	# installed pulls a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

scan: setup
	$(VENV)/bin/logllama scan sample_logs/hdfs_sample.log --labels sample_logs/hdfs_sample_labels.csv

demo: setup
	$(VENV)/bin/logllama demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/run_all.py
