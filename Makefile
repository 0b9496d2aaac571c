# Every target creates/refreshes the virtual environment it needs: `make test` on a fresh clone works.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit chaos chaos-long bench bench-peers screenshot clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/actionhub demo

lint: $(STAMP)
	$(BIN)/ruff check actionhub tests examples bench
	$(BIN)/ruff format --check actionhub

typecheck: $(STAMP)
	$(BIN)/mypy --strict actionhub

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# The fault-injection suite alone, with its figures; `make test` runs its short version too.
chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos

# The long version (tens of minutes): the figures of docs/reliability.md.
chaos-long: $(STAMP)
	ACTIONHUB_CHAOS=long ACTIONHUB_CHAOS_REPORT=chaos-long.json $(BIN)/python -m pytest -q -m chaos

# The README's picture of the dashboard: the browser test's own screenshot of the demo.
screenshot: $(STAMP)
	ACTIONHUB_SCREENSHOT=docs/dashboard.png $(BIN)/python -m pytest -q tests/test_dashboard_browser.py -k screenshot

bench: $(STAMP)
	$(BIN)/python -m bench.memory_bus
	$(BIN)/python -m bench.redis_streams
	$(BIN)/python -m bench.publish
	$(BIN)/python -m bench.process_pool
	$(BIN)/python -m bench.results
	$(BIN)/python -m bench.clients
	$(BIN)/python -m bench.typed
	$(BIN)/python -m bench.many_actions
	$(BIN)/python -m bench.dashboard
	$(BIN)/python -m bench.otel
	$(BIN)/python -m bench.limits

# side by side with Celery, Dramatiq, arq, saq, taskiq, streaq and the bare consumers (bench/README.md)
PEERS ?= ../shared/bench-peers
bench-peers: $(STAMP)
	ACTIONHUB_VENV=$(CURDIR)/.venv $(PEERS)/run.sh --runners-dir $(CURDIR)/bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
