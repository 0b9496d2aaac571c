# Every target creates/refreshes the virtual environment it needs: `make test` on a fresh clone works.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

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

bench: $(STAMP)
	$(BIN)/python -m bench.memory_bus
	$(BIN)/python -m bench.redis_streams

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
