# Two commands on a fresh machine:
#   make run    - install, download SCIN (~12 GB) and embed it into the embedded Qdrant store
#   make test   - install and run the test suite (offline, tiny models, a few minutes)
PYTHON ?= python3
VENV ?= .venv
SCIN_DIR ?= $(HOME)/data/scin
BIN = $(VENV)/bin

.PHONY: install run test lint bench clean

$(BIN)/scinsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/scinsearch

run: install
	$(BIN)/scinsearch download --to $(SCIN_DIR)
	$(BIN)/scinsearch embed --scin-dir $(SCIN_DIR)

# Both cores (pytest-xdist, at most 4 workers): whole files per worker, the heaviest first (tests/conftest.py).
# A worker that dies ends the run at once, naming its test: replacing it hangs xdist 3.8 under loadfile.
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder --max-worker-restart=0

lint: install
	$(BIN)/ruff check src tests benchmarks scripts docs && $(BIN)/ruff format --check src tests benchmarks scripts docs

bench: install
	$(BIN)/python benchmarks/bench_embed.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
