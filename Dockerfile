# vllm-watchdog as a sidecar container. Build: docker build -t vllm-watchdog:0.1.0 .
# Small: a build stage makes a virtualenv; the runtime stage is python:3.11-slim + that venv only.
# Runs as a non-root user (uid/gid 10001). To use the Docker socket, give the container the socket's
# group id: `group_add: ["<gid of /var/run/docker.sock>"]` (compose) or `--group-add <gid>`.
# Docker socket access is root-equivalent on the host: see docs/deploy.md#permissions.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package needs (see .dockerignore): metadata first, then the code.
COPY pyproject.toml README.md ./
COPY watchdog ./watchdog
RUN python -m venv /opt/vllm-watchdog/venv \
 && /opt/vllm-watchdog/venv/bin/pip install . \
 && find /opt/vllm-watchdog/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
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
ENTRYPOINT ["vllm-watchdog"]
CMD ["run", "--config", "/etc/vllm-watchdog/watchdog.yaml"]
