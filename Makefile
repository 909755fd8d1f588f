# Two entry points (SPEC §3): `make serve` and `make test`. Both do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= .data/demo
PIP_VERSION := 26.3
UV_VERSION := 0.13.9

.PHONY: serve test lint typecheck unit demo-data clean

# requirements.lock decides what a fresh machine gets: exact versions of every run-time, dev and
# optional-extra dependency (the tests exercise every extra). pyproject.toml keeps compatible
# ranges for `pip install edgeside`. `make lock` refreshes the lock after pyproject.toml changes.
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q 'pip==$(PIP_VERSION)'
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

.PHONY: lock
lock:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --all-extras \
		--custom-compile-command 'make lock' pyproject.toml -o requirements.lock

demo-data: $(STAMP)
	$(BIN)/edgeside demo build --data $(DATA)

# With no --data, `edgeside serve` builds the demo snapshots on first use and serves them.
serve: $(STAMP)
	$(BIN)/edgeside serve --host 127.0.0.1 --port 8080

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite, as two pytest streams side by side (tests/run-streams says why and how both
# stay honest). `$(BIN)/pytest -q` alone runs the same tests one after another.
unit: $(STAMP)
	PYTEST=$(BIN)/pytest tests/run-streams

test: lint typecheck unit

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

# The CDN pattern on loopback: demo origin, edgeside and nginx (deploy/nginx/); Ctrl-C stops it.
.PHONY: demo-cdn
demo-cdn: demo-data
	$(BIN)/python -m bench.proxies --data $(DATA)
