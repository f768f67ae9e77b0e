"""The watchdog deployed as a sidecar container (issue 7): it runs INSIDE a real container built from the empty
hostbase image (the host runtime, this checkout and its .venv bind-mounted read-only, the Docker socket and a
config dir mounted; deploy/sidecar-test/run-watchdog-hostbase.sh), watches a sibling emulator container, and
heals it when it is killed. Its /healthz and /incidents are read from the host, its notifications arrive at a
webhook receiver on the host."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockit import MODEL, PROBES, REPO, TARGET, free_port, remove_named, unique, until

pytestmark = pytest.mark.docker

SCRIPT = REPO / "deploy" / "sidecar-test" / "run-watchdog-hostbase.sh"

POLICIES = """
policies:
  - name: down
    match: {kinds: [service_down, engine_dead, not_ready]}
    guards: {cooldown_s: 0.2, backoff_initial_s: 0.2, backoff_max_s: 0.5, max_attempts: 10}
    verify: {timeout_s: 20, hold_s: 0.3, interval_s: 0.2}
    steps:
      - action: restart
      - action: restart
      - action: escalate
        severity: P0
"""


def sidecar_config(*, sibling: str, port: int, api_port: int, hook_port: int) -> str:
    """The watchdog.yaml as the sidecar sees it: paths inside its container, the socket at its usual place."""
    return f"""
state_dir: /var/lib/vllm-watchdog
http: {{listen: 127.0.0.1, port: {api_port}}}
logging: {{format: json, level: info}}
remediation:
  policy_files: [/var/lib/vllm-watchdog/policies.yaml]
targets:
  - name: {TARGET}
    base_url: http://127.0.0.1:{port}
    model: {MODEL}
    runtime: {{type: docker, container: {sibling}, stop_timeout_s: 2, api_timeout_s: 10}}
    crash_loop_exits: 10{PROBES}
notify:
  group_wait_s: 0.2
  receivers:
    - {{name: hook, type: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
"""


async def get_json(url: str) -> tuple[int, Any]:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=2) as c:
            r = await c.get(url)
        return r.status_code, r.json()
    except (httpx.HTTPError, ValueError):
        return 0, None


async def test_sidecar_container_heals_its_sibling(docker_client: Any, emulators: Any, tmp_path: Path) -> None:
    """The containerised watchdog answers /healthz on the host, sees `docker kill` of the sibling vLLM container
    through the mounted socket, starts it again, resolves the incident and notifies both edges."""
    from watchdog.demo import Receiver

    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing")
    emu = emulators(env={"GPU_MEMORY_UTILIZATION": "0.92"})
    receiver = Receiver()
    await receiver.start()
    state = tmp_path / "sidecar-state"
    state.mkdir()
    (state / "policies.yaml").write_text(POLICIES)
    api_port = free_port()
    config = tmp_path / "watchdog.yaml"
    config.write_text(sidecar_config(sibling=emu.name, port=emu.port, api_port=api_port, hook_port=receiver.port))
    name = unique("sidecar")
    base = f"http://127.0.0.1:{api_port}"

    def sidecar_logs() -> str:
        try:
            return bytes(docker_client.api.logs(name, tail=30)).decode(errors="replace")
        except Exception as e:
            return f"(no sidecar logs: {e.__class__.__name__})"

    try:
        run = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT), name, str(config), str(state)],
                                      capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        sc = docker_client.api.inspect_container(name)
        assert sc["HostConfig"]["NetworkMode"] == "host" and sc["Config"]["Image"] == "hostbase:latest"
        assert any(m["Destination"] == "/var/run/docker.sock" for m in sc["Mounts"])
        assert all(not m["RW"] for m in sc["Mounts"] if m["Destination"] == str(REPO))

        async def healthy() -> bool:
            code, body = await get_json(f"{base}/healthz")
            return code == 200 and bool(body and body.get("healthy"))

        await until(healthy, 30, what="sidecar /healthz", why=sidecar_logs)

        async def watching() -> bool:
            code, body = await get_json(f"{base}/status")
            return code == 200 and body["targets"][TARGET]["probes"].get("readiness") == "passing"

        await until(watching, 20, what="sidecar sees the sibling ready", why=sidecar_logs)
        # the events stream is subscribed at start; give the sidecar's watch a real death to see
        before = emu.inspect()["State"]["StartedAt"]
        t_kill = time.time()
        await asyncio.to_thread(emu.kill)

        async def opened() -> Any:
            code, items = await get_json(f"{base}/incidents")
            return next((i for i in items or [] if i["kind"] == "service_down"), None) if code == 200 else None

        inc = await until(opened, 10, what="service_down opened in the sidecar", why=sidecar_logs)
        assert inc["evidence"].get("exit_code") == 137
        detect_s = inc["opened_at"] - t_kill

        async def healed() -> Any:
            code, doc = await get_json(f"{base}/incidents/{inc['id']}")
            return doc if code == 200 and doc["state"] == "resolved" else None

        doc = await until(healed, 30, what="incident resolved by the sidecar", why=sidecar_logs)
        assert [a["action"] for a in doc["attempts"] if a["outcome"] == "succeeded"] == ["restart"]
        st = emu.inspect()["State"]
        assert st["Running"] and st["StartedAt"] != before
        assert await emu.state() is not None
        await until(lambda: {"opened", "resolved"} <= {i.get("event") for i in receiver.items}, 10,
                    what="webhook got opened and resolved", why=sidecar_logs)
        code, _ = await get_json(f"{base}/healthz")
        assert code == 200
        print(f"sidecar: docker kill → incident opened in {detect_s * 1000:.0f} ms")
    finally:
        with contextlib.suppress(Exception):
            docker_client.api.stop(name, timeout=5)  # SIGTERM: the daemon's clean shutdown
        remove_named(docker_client, name)
        await receiver.close()
