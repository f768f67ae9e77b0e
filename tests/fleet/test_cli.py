"""`vllm-watchdog fleet status` end to end: a real etcd cluster, real coordinators, the real CLI process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from watchdog.adapters.etcd import EtcdKV
from watchdog.fleet import FleetCoordinator, FleetSettings, OpenIncident, SlotGrant
from watchdog.fleet.localcluster import LocalEtcdCluster, free_ports


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchdog", "fleet", "status", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})


async def _populate(endpoints: list[str], group: str) -> None:
    """Two hosts register (one down with an incident); host b takes a slot; leases outlive this loop."""
    for host, healthy in (("gpu-a", True), ("gpu-b", False)):
        s = FleetSettings.model_validate({"etcd": {"endpoints": endpoints}, "group": group, "host": host,
                                          "lease_ttl_s": 30})
        kv = EtcdKV(s.etcd.endpoints)
        c = FleetCoordinator(s, kv)
        incs = () if healthy else (OpenIncident(12, "service_down", "P0", "connection refused"),)
        c.report("vllm-0", healthy=healthy, status="ok" if healthy else "fail", incidents=incs)
        await c.beat()
        if not healthy:
            g = await c.budget.acquire("vllm-0", "restart", 12)
            assert isinstance(g, SlotGrant)
            assert g._task is not None
            g._task.cancel()  # leave the slot held (its 30 s lease outlives the test)
        await kv.close()


def test_fleet_status_json_and_table(etcd_cluster: LocalEtcdCluster) -> None:
    """fleet status lists every host, target, health, open incident and the held slot, as JSON and as a table."""
    group = f"cli-{os.getpid()}"
    asyncio.run(_populate(etcd_cluster.endpoints, group))
    r = cli("--endpoints", ",".join(etcd_cluster.endpoints), "--group", group, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [h["host"] for h in doc["hosts"]] == ["gpu-a", "gpu-b"]
    b = doc["hosts"][1]["targets"][0]
    assert (b["target"], b["healthy"], b["incidents"][0]["kind"]) == ("vllm-0", False, "service_down")
    assert [(s["host"], s["action"], s["incident_id"]) for s in doc["slots"]] == [("gpu-b", "restart", 12)]
    assert (doc["targets"], doc["unhealthy"], doc["slot_limit"], doc["breaker"]) == (2, 1, 1, None)
    t = cli("--endpoints", ",".join(etcd_cluster.endpoints), "--group", group)
    assert t.returncode == 0, t.stderr
    assert "slots 1/1 held" in t.stdout and "#12 service_down P0" in t.stdout
    assert "slot 0: gpu-b/vllm-0 restart incident 12" in t.stdout


def test_fleet_status_reads_config_section(etcd_cluster: LocalEtcdCluster, tmp_path: Path) -> None:
    """The CLI reads the config's fleet: section; an unknown key there is exit 2 naming the key."""
    cfg = tmp_path / "watchdog.yaml"
    cfg.write_text(json.dumps({"fleet": {"etcd": {"endpoints": etcd_cluster.endpoints}, "group": "empty"}}))
    r = cli("--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "no host has registered" in r.stdout
    cfg.write_text(json.dumps({"fleet": {"etcd": {"endpoints": etcd_cluster.endpoints}, "group": "g",
                                         "max_disruptd": 1}}))
    bad = cli("--config", str(cfg))
    assert bad.returncode == 2 and "fleet.max_disruptd" in bad.stderr


def test_fleet_status_unreachable_is_exit_3(tmp_path: Path) -> None:
    """With no etcd answering, fleet status exits 3 and says so (bounded by the timeout)."""
    port = free_ports(1)[0]
    r = cli("--endpoints", f"http://127.0.0.1:{port}", "--group", "g")
    assert r.returncode == 3 and "no quorum" in r.stderr
