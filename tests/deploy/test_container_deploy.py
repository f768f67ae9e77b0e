"""Sidecar deployment files: Dockerfile, .dockerignore, docker-compose layout, Prometheus scrape config, and
the Kubernetes example (its embedded config is validated with the watchdog's own loader)."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from watchdog.config.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


# ----------------------------------------------------------------------------------------- Dockerfile
def _healthcheck_argv() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert m, "HEALTHCHECK with an exec-form CMD"
    argv: list[str] = json.loads(m.group(1))
    return argv


def test_dockerfile_is_small_non_root_with_healthcheck() -> None:
    """python:3.11-slim base, a non-root USER, the /healthz HEALTHCHECK on 9321, the daemon as entrypoint."""
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3.11-slim$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "WATCHDOG_HEALTHZ_URL=http://127.0.0.1:9321/healthz" in text
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--", "vllm-watchdog"\]', text, re.M)
    assert re.search(r'^CMD \["run", "--config", "/etc/vllm-watchdog/watchdog.yaml"\]', text, re.M)


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[tuple[str, type[_Healthz]]]:
    handler = type("H", (_Healthz,), {"status": 200})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/healthz", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_healthcheck_command_follows_healthz(healthz_server: tuple[str, type[_Healthz]]) -> None:
    """The HEALTHCHECK command exits 0 on a 200 /healthz and non-zero on 503 or when nothing listens."""
    url, handler = healthz_server
    argv = [sys.executable if a == "python" else a for a in _healthcheck_argv()]

    def run(u: str) -> int:
        env = {**os.environ, "WATCHDOG_HEALTHZ_URL": u}
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    assert run(url) == 0
    handler.status = 503
    assert run(url) != 0
    assert run("http://127.0.0.1:9/healthz") != 0


def test_dockerignore_keeps_only_the_build_inputs() -> None:
    """The build context is pyproject.toml, README.md, watchdog/ and what watchdog/data links to (no .venv,
    tests, state)."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!watchdog/"} <= set(lines)
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    copied = {p for c in copies for p in c.split()}
    assert copied == {"pyproject.toml", "README.md", "watchdog", "policies/default.yaml", "systemd",
                      "examples/systemd"}


# ------------------------------------------------------------------------------------- docker compose
def test_compose_reproduces_the_runbook_layout() -> None:
    """vllm on HTTPS 7654 with a GPU and the settings env file; the watchdog sidecar with socket, rw config dir,
    state volume and its config; Prometheus with the shipped config and rules."""
    c = _compose()
    assert set(c["services"]) == {"vllm", "watchdog", "prometheus"}
    vllm, wd, prom = (c["services"][k] for k in ("vllm", "watchdog", "prometheus"))

    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert "7654:7654" in vllm["ports"]
    assert "./vllm-config/vllm.env" in vllm["env_file"]
    cmd = " ".join(vllm["command"])
    for flag in ("--port 7654", "--ssl-certfile", "--gpu-memory-utilization \"$$GPU_MEMORY_UTILIZATION\"",
                 "--max-num-seqs \"$$MAX_NUM_SEQS\""):  # fmt: skip
        assert flag in cmd, flag
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert vllm["restart"] != "on-failure"  # vLLM exits 0 when its engine dies

    vols = wd["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in vols
    assert "./vllm-config:/srv/vllm:rw" in vols
    assert any(v.startswith("watchdog-state:/var/lib/vllm-watchdog") for v in vols)
    assert any(v.endswith(":/etc/vllm-watchdog/watchdog.yaml:ro") for v in vols)
    assert wd["group_add"] and "DOCKER_GID" in wd["group_add"][0]
    assert "ports" not in wd  # metrics and /incidents stay on the compose network
    assert wd["cap_drop"] == ["ALL"] and wd["read_only"] is True
    assert wd["build"]["context"] == ".."
    assert (DEPLOY / wd["build"]["context"] / "Dockerfile").is_file()

    pvols = prom["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in pvols
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in pvols
    for v in (*pvols, *vols):
        src = v.split(":")[0]
        if src.startswith("./prometheus/"):
            assert (DEPLOY / src).is_file(), src
    assert set(c["volumes"]) >= {"watchdog-state", "vllm-cache", "prometheus-data"}


def test_prometheus_scrapes_vllm_and_the_watchdog() -> None:
    """prometheus.yml scrapes job vllm-watchdog at watchdog:9321 and vLLM over HTTPS, and loads alerts.yml."""
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["vllm-watchdog"]["static_configs"][0]["targets"] == ["watchdog:9321"]
    assert jobs["vllm"]["scheme"] == "https"
    assert jobs["vllm"]["static_configs"][0]["targets"] == ["vllm:7654"]
    assert cfg["rule_files"] == ["alerts.yml"]


def test_promtool_check_config() -> None:
    """`promtool check config` accepts prometheus.yml together with the rules it loads."""
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI")
        pytest.skip("promtool not installed")
    r = subprocess.run([exe, "check", "config", "prometheus.yml"], capture_output=True, text=True, timeout=60,
                       cwd=DEPLOY / "prometheus")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_docker_compose_config_when_available(tmp_path: Path) -> None:
    """Where the compose plugin exists, `docker compose config` accepts the file (with its expected inputs)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose plugin not installed; structure is checked by the test above")
    work = tmp_path / "deploy"
    shutil.copytree(DEPLOY, work)
    (work / "vllm-config").mkdir()
    (work / "vllm-config" / "vllm.env").write_text("MODEL=m\nGPU_MEMORY_UTILIZATION=0.9\nMAX_NUM_SEQS=256\n")
    (work / "secrets").mkdir()
    (work / "secrets" / "vllm.env").write_text("VLLM_API_KEY=x\n")
    env = {**os.environ, "DOCKER_GID": "999"}
    r = subprocess.run([docker, "compose", "-f", str(work / "docker-compose.yml"), "config", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------------------- Kubernetes
def _k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "vllm-with-watchdog.yaml").read_text()) if d]


def test_kubernetes_sidecar_example() -> None:
    """The pod has vLLM and the watchdog; the watchdog is probed on /healthz, runs non-root, has no docker socket."""
    dep = next(d for d in _k8s_docs() if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"vllm", "watchdog"}
    wd = containers["watchdog"]
    assert wd["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9321}
    assert wd["securityContext"]["runAsNonRoot"] is True
    assert wd["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "metrics", "containerPort": 9321} in wd["ports"]
    assert not any("docker.sock" in json.dumps(v) for v in pod["volumes"])
    assert containers["vllm"]["livenessProbe"]["httpGet"]["path"] == "/health"
    assert (DEPLOY / "kubernetes" / "README.md").is_file()


def test_kubernetes_embedded_config_is_valid_and_leaves_restarts_to_the_kubelet() -> None:
    """The ConfigMap's watchdog.yaml passes the real config loader and names no runtime (kubelet restarts)."""
    cm = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap")
    cfg = load_text(cm["data"]["watchdog.yaml"], file="vllm-with-watchdog.yaml#watchdog.yaml")
    assert cfg.http.listen == "0.0.0.0" and cfg.http.port == 9321
    assert all(t.runtime is None for t in cfg.targets)
    assert cfg.targets[0].base_url.startswith("https://127.0.0.1:7654")
