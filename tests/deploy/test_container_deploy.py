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
    for name in ("watchdog.crt", "watchdog.key", "watchdog-token"):  # the watchdog's compose secrets
        (work / "secrets" / name).write_text("placeholder\n")
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
    assert wd["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9321, "scheme": "HTTPS"}
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


# ------------------------------------------------------------ the watchdog's endpoint beyond loopback (issue 14)
# Listening beyond loopback needs a bearer token and TLS, or the daemon refuses to start. Both examples listen
# on 0.0.0.0 (Prometheus, the kubelet): they must configure both, from secrets, and everything that talks to
# the endpoint (healthcheck, kubelet probe, Prometheus) must speak HTTPS.


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A private CA and a server certificate made with the commands docs/deploy.md gives (SAN: watchdog,
    localhost, 127.0.0.1), and a token file."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is missing in CI")
        pytest.skip("openssl not installed")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=watchdog", "-keyout", "watchdog.key",
             "-out", "watchdog.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:watchdog,DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "watchdog.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-extfile", "san.ext", "-out", "watchdog.crt", cwd=d)
    (d / "token").write_text("0123456789abcdef0123456789abcdef\n")
    return d


def _compose_watchdog_env(pki: Path) -> dict[str, str]:
    """The watchdog service's environment with its /run/secrets/<name> paths pointed at the test's files."""
    c = _compose()
    wd = c["services"]["watchdog"]
    files = {"watchdog_tls_cert": pki / "watchdog.crt", "watchdog_tls_key": pki / "watchdog.key",
             "watchdog_token": pki / "token"}
    env = {}
    for k, v in wd["environment"].items():
        v = str(v)
        if v.startswith("/run/secrets/"):
            v = str(files[v.removeprefix("/run/secrets/")])
        env[k] = v
    return env


def test_compose_watchdog_listens_beyond_loopback_with_token_and_tls_from_secrets() -> None:
    """The compose watchdog listens on 0.0.0.0 with TLS cert/key and the token file taken from compose secrets
    (files under ./secrets/, mounted at /run/secrets/<name>), and the service lists every secret it names."""
    c = _compose()
    wd = c["services"]["watchdog"]
    env = wd["environment"]
    assert env["VLLM_WATCHDOG_HTTP__LISTEN"] == "0.0.0.0"
    named = {k: v for k, v in env.items() if str(v).startswith("/run/secrets/")}
    assert set(named) == {"VLLM_WATCHDOG_HTTP__TLS__CERT_FILE", "VLLM_WATCHDOG_HTTP__TLS__KEY_FILE",
                          "VLLM_WATCHDOG_AUTH__TOKEN_FILE"}
    secrets = {str(v).removeprefix("/run/secrets/") for v in named.values()}
    assert secrets == set(wd["secrets"]) <= set(c["secrets"])
    for name in secrets:
        assert c["secrets"][name]["file"].startswith("./secrets/"), name  # never committed, next to vllm.env
    assert "ports" not in wd


def test_compose_watchdog_config_passes_the_endpoint_preflight(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/compose/watchdog.yaml with the compose service's environment overrides (0.0.0.0, TLS, token)
    passes the endpoint check the daemon runs at start (no exposure refusal); without the token and TLS
    overrides the same listen address is refused."""
    from watchdog.config.loader import load_file
    from watchdog.preflight import endpoint_problems

    monkeypatch.setenv("VLLM_API_KEY", "example-key")
    env = _compose_watchdog_env(pki)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = load_file(ROOT / "examples" / "compose" / "watchdog.yaml")
    assert cfg.http.listen == "0.0.0.0" and cfg.http.tls.cert_file is not None and cfg.auth.token_file is not None
    assert endpoint_problems(cfg, "watchdog.yaml", port=False) == []
    for k in ("VLLM_WATCHDOG_HTTP__TLS__CERT_FILE", "VLLM_WATCHDOG_HTTP__TLS__KEY_FILE",
              "VLLM_WATCHDOG_AUTH__TOKEN_FILE"):
        monkeypatch.delenv(k)
    bare = load_file(ROOT / "examples" / "compose" / "watchdog.yaml")
    problems = endpoint_problems(bare, "watchdog.yaml", port=False)
    assert [p.field for p in problems] == ["http.listen"] and "beyond loopback" in problems[0].message


def test_prometheus_scrapes_the_watchdog_over_https() -> None:
    """Prometheus scrapes the watchdog with scheme https, verifying it with the mounted CA and the name in its
    certificate ("watchdog", the compose service)."""
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "vllm-watchdog")
    assert job["scheme"] == "https"
    assert job["tls_config"] == {"ca_file": "ca.crt", "server_name": "watchdog"}
    assert "./certs/ca.crt:/etc/prometheus/ca.crt:ro" in _compose()["services"]["prometheus"]["volumes"]


async def _serve_healthz(pki: Path) -> Any:
    from watchdog.api import HttpServer, server_tls_context

    async def handler(path: str) -> tuple[int, str, bytes]:
        return (200, "application/json", b"{}") if path == "/healthz" else (404, "text/plain", b"")

    srv = HttpServer(handler, "127.0.0.1", 0, tls=server_tls_context(pki / "watchdog.crt", pki / "watchdog.key"),
                     token=True)
    await srv.start()
    return srv


async def test_compose_healthcheck_and_prometheus_reach_the_tls_endpoint(pki: Path) -> None:
    """Against the watchdog's real TLS endpoint (a certificate made as docs/deploy.md says): the compose
    healthcheck command exits 0 (it verifies with the CA), a client that verifies the name "watchdog" (as
    Prometheus does) connects, and plain HTTP gets no answer."""
    import asyncio
    import ssl

    import httpx

    test = _compose()["services"]["watchdog"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    assert "https://127.0.0.1:9321/healthz" in test[3] and "/etc/vllm-watchdog/ca.crt" in test[3]
    assert "./certs/ca.crt:/etc/vllm-watchdog/ca.crt:ro" in _compose()["services"]["watchdog"]["volumes"]
    srv = await _serve_healthz(pki)
    try:
        code = test[3].replace("9321", str(srv.port)).replace("/etc/vllm-watchdog/ca.crt", str(pki / "ca.crt"))
        r = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                                    timeout=30)
        assert r.returncode == 0, r.stderr
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        _reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="watchdog")
        writer.close()
        async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
            with pytest.raises(httpx.HTTPError):
                await c.get(f"http://127.0.0.1:{srv.port}/healthz")
    finally:
        await srv.close()
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert "subjectAltName=DNS:watchdog,DNS:localhost,IP:127.0.0.1" in text
    assert "openssl rand -hex 32 > secrets/watchdog-token" in text


def _k8s_watchdog() -> tuple[dict[str, Any], dict[str, Any]]:
    dep = next(d for d in _k8s_docs() if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "watchdog")


def test_kubernetes_watchdog_listens_beyond_loopback_with_token_and_tls_from_secrets(
        pki: Path, tmp_path: Path) -> None:
    """The ConfigMap's watchdog.yaml sets http.tls and auth.token_file to files of Secret volumes mounted only
    into the watchdog container; with those files present the endpoint check the daemon runs at start passes."""
    from watchdog.preflight import endpoint_problems

    cm = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap")
    text = cm["data"]["watchdog.yaml"]
    cfg = load_text(text, file="vllm-with-watchdog.yaml#watchdog.yaml")
    assert cfg.http.listen == "0.0.0.0"
    files = {"cert": cfg.http.tls.cert_file, "key": cfg.http.tls.key_file, "token": cfg.auth.token_file}
    assert all(f is not None for f in files.values())
    pod, wd = _k8s_watchdog()
    mounts = {m["mountPath"]: m["name"] for m in wd["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_of = {}
    for what, f in files.items():
        mount = str(Path(str(f)).parent)
        assert mount in mounts, f"{what}: {f} is on no volume of the watchdog container"
        vol = volumes[mounts[mount]]
        assert "secret" in vol, f"{what}: {f} must come from a Secret"
        secret_of[what] = vol["secret"]["secretName"]
    assert secret_of["cert"] == secret_of["key"] == "vllm-watchdog-tls"
    assert secret_of["token"] == "vllm-watchdog-auth"
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    assert not {m["name"] for m in vllm["volumeMounts"]} & {mounts[str(Path(str(f)).parent)] for f in files.values()}
    # the same config with the Secrets' files present: the daemon would start (no exposure refusal)
    local = {"/etc/vllm-watchdog-tls/tls.crt": pki / "watchdog.crt", "/etc/vllm-watchdog-tls/tls.key":
             pki / "watchdog.key", "/etc/vllm-watchdog-auth/token": pki / "token"}
    assert set(local) == {str(f) for f in files.values()}
    for k, v in local.items():
        text = text.replace(k, str(v))
    ready = load_text(text, file="watchdog.yaml")
    assert endpoint_problems(ready, "watchdog.yaml", port=False) == []


def test_kubernetes_probes_and_scrape_speak_https() -> None:
    """The kubelet probes the watchdog's /healthz with scheme HTTPS, and the PodMonitor scrapes with scheme
    https, the CA of the watchdog's TLS Secret and a server name its certificate holds."""
    _, wd = _k8s_watchdog()
    assert wd["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    pm = next(d for d in _k8s_docs() if d["kind"] == "PodMonitor")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["scheme"] == "https"
    assert ep["tlsConfig"]["ca"] == {"secret": {"name": "vllm-watchdog-tls", "key": "ca.crt"}}
    svc = next(d for d in _k8s_docs() if d["kind"] == "Service")
    assert ep["tlsConfig"]["serverName"] == f"{svc['metadata']['name']}.llm.svc"
    readme = (DEPLOY / "kubernetes" / "README.md").read_text()
    assert f"DNS:{ep['tlsConfig']['serverName']}" in readme
