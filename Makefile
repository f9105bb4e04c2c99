# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each installs what is missing (a .venv with the package and its dev extras at the versions of
# requirements.lock, Debian espeak-ng; for `make test` also the Debian PostgreSQL server, which
# the multi-worker tuning test starts, and Chromium). `make lock` refreshes the lock on purpose.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= demo
LOCK_ENV := build/lock-venv
# what `make test` installs, so a test that misses one fails instead of skipping (tests/conftest.py)
REQUIRE  := postgres,browser,espeak,extras,lock

# torch's default thread pool spins while waiting and slows down badly when another process
# holds a core; a passive wait policy avoids it (measured 4-15x on 2-core machines).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test lint bench install lock espeak postgres browser clean

# every installed version is the lock's (pip -c): pyproject.toml keeps ranges for users
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# Resolve the dev set afresh (the newest releases within pyproject.toml's ranges, torch pinned by
# constraints.txt) in a throw-away venv and write every installed version to requirements.lock.
# Run on purpose, when the dependencies should move; review and commit the new lock.
lock:
	rm -rf $(LOCK_ENV)
	$(PYTHON) -m venv $(LOCK_ENV)
	$(LOCK_ENV)/bin/python -m pip install --quiet --upgrade "pip>=23" "setuptools>=68,<81" wheel
	$(LOCK_ENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	{ echo "# Every version \`make\` installs (pip -c), written by \`make lock\` on $$(date -u +%F)."; \
	  echo "# torch's local label (+cpu) is dropped: ==2.13.0 also takes the CPU wheel."; \
	  $(LOCK_ENV)/bin/python -m pip freeze --all --exclude-editable | sed -e 's/+cpu$$//'; \
	} > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	rm -rf $(LOCK_ENV)

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
	TACOTRAIN_REQUIRE=$(REQUIRE) OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q
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
