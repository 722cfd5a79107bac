# The two commands that matter: `make run` and `make test`. Both work on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 8765
# The simulator's state file: the demo seeds its threads into it, `make run`'s simulator loads it.
SIM_STORE ?= var/simulator-store.json
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint docs bench venv chromium simulate clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "rtdash needs $(PYTHON) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# Browser tests drive Debian's Chromium; Playwright's own browser downloads cannot work here.
# The JavaScript snippet tests run the playground's fetch example under Node.js.
chromium:
	@test -x $(CHROMIUM) && command -v node >/dev/null || { \
	  echo "Installing Chromium and Node.js from the OS packages (needs root)…"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium nodejs >/dev/null; }

run: $(STAMP)
	$(PY) manage.py migrate --noinput
	RUNTOOLS_API_URL=http://127.0.0.1:$(SIM_PORT)/v1 $(PY) manage.py demo --simulator-store $(SIM_STORE)
	@SIM_STORE=$(SIM_STORE) bash scripts/run.sh $(HOST) $(PORT) $(SIM_PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

# The reference in docs/, built strictly: a broken link or a page missing from the nav fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test: $(STAMP) chromium lint docs
	$(VENV)/bin/pytest

BENCHMARKS := simulator gateway relay history reports load

bench: $(STAMP)
	@for name in $(BENCHMARKS); do \
	  echo "== bench/$$name.py"; $(PY) -m bench.$$name || exit 1; done

simulate: $(STAMP)
	$(PY) -m simulator --host $(HOST) --port $(SIM_PORT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles site
