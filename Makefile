# Two commands on a fresh machine: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
PORT ?= 8501

.PHONY: run test lint chromium worker

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# The optional Ray extra (README: Beyond one machine): its tests need it, `make run` does not.
$(RAY_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[ray]'
	touch $(RAY_STAMP)

# Debian's chromium for the browser tests (the Playwright download cannot run offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: $(STAMP) $(RAY_STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

worker: $(STAMP)
	$(PY) -m contrast_core worker
