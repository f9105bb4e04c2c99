# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each installs what is missing (a .venv with the package and its dev extras, Debian espeak-ng;
# for `make test` also the Debian PostgreSQL server, which the multi-worker tuning test starts).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= demo

# torch's default thread pool spins while waiting and slows down badly when another process
# holds a core; a passive wait policy avoids it (measured 4-15x on 2-core machines).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test lint bench install espeak postgres browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23" "setuptools>=68,<81" wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) espeak

espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "espeak-ng not found: installing the Debian package"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }

# the server binaries only (initdb, pg_ctl): the test starts its own cluster on 127.0.0.1
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  echo "PostgreSQL server not found: installing the Debian package"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# Debian's Chromium for the report-page browser test (Playwright drives it, never downloads one)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found: installing the Debian package"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

demo: install
	$(BIN)/tacotrain demo --out $(DEMO_OUT)

test: install postgres browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q
	$(BIN)/ruff check src tests benchmarks

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: install
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/prepare_throughput.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/padding_share.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/tune_study.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
