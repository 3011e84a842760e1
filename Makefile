# Two entry points, each sets itself up: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,onnx,ray]"
	touch $@

setup: $(BIN)/.installed

# Five rounds of two proposals, evaluated by two workers at once (one core each on a 2-core CPU).
demo: setup
	$(BIN)/python -m graph.run --task isic --synthetic --iter-max 5 --proposals 2 --workers 2

# The type check first (about a minute cold, seconds with its cache), then the tests.
test: setup
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The search suite, then the baselines suite on its best agents design, into results/<profile>/
# (quick: a 2-core CPU, synthetic set; BENCH_PROFILE=full BENCH_ARGS="--data-dir DIR" on a GPU).
BENCH_PROFILE ?= quick
bench: setup
	$(BIN)/python -m graph.bench search --profile $(BENCH_PROFILE) $(BENCH_ARGS)
	$(BIN)/python -m graph.bench baselines --profile $(BENCH_PROFILE) $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check .

.PHONY: setup demo test lint bench
