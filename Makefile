# Two commands on a fresh machine:
#   make run    - install, download SCIN (~12 GB) and embed it into the embedded Qdrant store
#   make test   - install and run the test suite (offline, tiny models, a few minutes)
PYTHON ?= python3
VENV ?= .venv
SCIN_DIR ?= $(HOME)/data/scin
BIN = $(VENV)/bin

.PHONY: install run test lint bench clean

# A current pip first (venv's bundled pip resolves and unpacks more slowly). pip compiles bytecode on one core
# (~50 s); compileall uses every core and skips what is never imported: packages' own test suites and the model
# zoo of transformers (the one architecture loaded compiles on first use). A file written for a newer Python
# fails to compile (as under pip, harmless), so compileall's status is not checked. docs/testing.md has the times.
$(BIN)/scinsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "pip>=26.3"
	$(BIN)/pip install -q --no-compile -e ".[test]"
	$(BIN)/python -m compileall -q -j 0 -x 'site-packages/(.*/)?tests?/|site-packages/transformers/models/' $(VENV)/lib > /dev/null || true
	touch $@

install: $(BIN)/scinsearch

run: install
	$(BIN)/scinsearch download --to $(SCIN_DIR)
	$(BIN)/scinsearch embed --scin-dir $(SCIN_DIR)

# Both cores (pytest-xdist, at most 4 workers): whole files per worker, the heaviest first (tests/conftest.py).
# A worker that dies ends the run at once, naming its test: replacing it hangs xdist 3.8 under loadfile.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: otherwise every worker and every process a test
# starts compiles again what it imports (pytest's rewritten tests too), ~4 s each.
test: install
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder --max-worker-restart=0

lint: install
	$(BIN)/ruff check src tests benchmarks scripts docs && $(BIN)/ruff format --check src tests benchmarks scripts docs

bench: install
	$(BIN)/python benchmarks/bench_embed.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
