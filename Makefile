# Every target creates and fills .venv on first use: a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_DIR := protos
GEN_DIR := payments/amazonpay/v1

# Port of the development emulator `make run` starts (and `make emulator` serves on).
DEV_EMULATOR_PORT ?= 8480
export DEV_EMULATOR_PORT

.PHONY: run demo test lint fmt typecheck proto proto-check buf-lint buf-breaking buf-release venv emulator bench soak lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m service

# With `make run` going: one whole purchase (create, buyer steps, complete, capture, two refunds).
demo: $(STAMP)
	$(PY) -m amazonpay_client demo

emulator: $(STAMP)
	$(PY) -m emulator --host 127.0.0.1 --port $(DEV_EMULATOR_PORT)

test: $(STAMP)
	$(PY) scripts/run_tests.py $(PYTEST_ARGS)

lint: $(STAMP) proto-check buf-lint buf-breaking
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

buf-lint: $(STAMP)
	$(VENV)/bin/buf lint

# Compares protos/ with the previous commit (pass BUF_AGAINST=origin/main for a branch).
buf-breaking: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/buf_breaking.sh $(BUF_AGAINST)

# At a release: record the API other teams now depend on (refused if it breaks the last one).
buf-release: buf-breaking
	$(VENV)/bin/buf build protos --exclude-source-info -o -#format=json | $(PY) -c \
	  'import json, sys; print(json.dumps(json.load(sys.stdin), indent=1, sort_keys=True))' \
	  > protos/released-v1.json

proto: $(STAMP)
	$(PY) scripts/gen_protos.py

proto-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

soak: $(STAMP)
	$(PY) -m bench.soak $(SOAK_ARGS)

lock: $(STAMP)
	{ echo "# Exact versions every install uses (pip -c). Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
