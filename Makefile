# Two entry points (SPEC §3): `make serve` and `make test`. Both do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= .data/demo

.PHONY: serve test lint typecheck unit demo-data clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

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

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

# The CDN pattern on loopback: demo origin, edgeside and nginx (deploy/nginx/); Ctrl-C stops it.
.PHONY: demo-cdn
demo-cdn: demo-data
	$(BIN)/python -m bench.proxies --data $(DATA)
