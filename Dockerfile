# vllm-watchdog as a sidecar container. Build: docker build -t vllm-watchdog:0.1.0 .
# Small: a build stage makes a virtualenv; the runtime stage is python:3.11-slim + tini + that venv only.
# Runs as a non-root user (uid/gid 10001) under tini (PID 1: forwards SIGTERM, reaps the children the
# process runtime and `exec` actions leave; without this image, `docker run --init` does the same).
# To use the Docker socket, give the container the socket's group id: `group_add: ["<gid of
# /var/run/docker.sock>"]` (compose) or `--group-add <gid>`. Docker socket access is root-equivalent on the
# host: see docs/deploy.md#permissions.
# Another base (a mirror, an offline registry): --build-arg PYTHON_IMAGE=registry.example/python:3.11-slim
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package needs (see .dockerignore): metadata, the code, and the files its package data links
# to (watchdog/data/ holds symlinks to the unit, the env example, the systemd example config, the policy).
COPY pyproject.toml README.md ./
COPY policies/default.yaml ./policies/default.yaml
COPY systemd ./systemd
COPY examples/systemd ./examples/systemd
COPY watchdog ./watchdog
RUN python -m venv /opt/vllm-watchdog/venv \
 && /opt/vllm-watchdog/venv/bin/pip install . \
 && find /opt/vllm-watchdog/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# where this image's source lives (set by CI: --build-arg SOURCE_URL=https://…/vllm-watchdog)
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="vllm-watchdog" \
      org.opencontainers.image.description="Self-healing watchdog for vLLM inference servers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}"
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# Same interpreter path as the build stage, so the copied venv works unchanged.
COPY --from=build /opt/vllm-watchdog/venv /opt/vllm-watchdog/venv
RUN groupadd --system --gid 10001 vllm-watchdog \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vllm-watchdog --no-create-home \
      --shell /usr/sbin/nologin vllm-watchdog \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/vllm-watchdog \
 && install -d -m 0755 /etc/vllm-watchdog
ENV PATH=/opt/vllm-watchdog/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    VLLM_WATCHDOG_LOGGING__FORMAT=json \
    WATCHDOG_HEALTHZ_URL=http://127.0.0.1:9321/healthz
# State (incident DB, remediation ledger, outbox, config snapshots) must outlive the container.
VOLUME ["/var/lib/vllm-watchdog"]
# /healthz, /metrics, /incidents. The daemon listens on 127.0.0.1:9321 unless configured otherwise
# (VLLM_WATCHDOG_HTTP__LISTEN / __PORT); set WATCHDOG_HEALTHZ_URL to match if you change the port.
EXPOSE 9321
USER 10001:10001
# Healthy = the watchdog's own loop makes progress (/healthz answers 200, 503 when wedged).
# Docker only MARKS an unhealthy container; it does not restart it (alert on it, see alerts.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['WATCHDOG_HEALTHZ_URL'], timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "vllm-watchdog"]
CMD ["run", "--config", "/etc/vllm-watchdog/watchdog.yaml"]
