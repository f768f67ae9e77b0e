"""The whole daemon survives hostile targets and receivers under a real memory cap: an endless /health body,
a trickling readiness body, a gzip-bomb canary, an endless /metrics page, a 50 MB breaker page and a receiver
that answers every delivery with a 50 MB error, all at once, in `docker run --memory 256m`; its peak RSS stays
below 150 MB (issue 11 §3)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from chaos.memcap import CASES, MEMORY_CAP, run_case

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

RSS_LIMIT_MB = 150.0


@pytest.fixture(autouse=True)
def _engine(docker_client: object) -> None:
    """Needs the real Docker engine and the hostbase image (skips, or fails under CI=true, like tests/docker)."""
    assert shutil.which("docker") is not None
    assert subprocess.run(["docker", "image", "inspect", "hostbase:latest"], capture_output=True).returncode == 0


def test_every_hostile_target_and_receiver_at_once_under_a_memory_cap() -> None:
    """Probed and notified against every hostile route for 20 s, the capped daemon stays up, is never
    OOM-killed, and its peak RSS (VmHWM) stays below 150 MB."""
    r = run_case("all", seconds=20.0, min_hits=3)
    routes = {v for v in CASES["all"].values()}
    assert all(r.hits.get(route, 0) >= 3 for route in routes), (r.hits, r.log_tail)
    assert r.alive and not r.oom_killed, r.log_tail
    assert r.samples >= 10
    assert r.hwm_mb < RSS_LIMIT_MB, f"peak RSS {r.hwm_mb:.1f} MB under --memory {MEMORY_CAP}"
    assert "body larger than" in r.log_tail or "body_too_large" in r.log_tail or r.hits
