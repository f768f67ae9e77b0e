"""The daemon's own loop health (for /healthz and the systemd watchdog): a job stuck past its timeout or
silent for too long makes the loop unhealthy, with the job named in the reason."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from watchdog.clock import FakeClock
from watchdog.config import load_text
from watchdog.daemon import Daemon
from watchdog.remediation.policy import PolicySet
from watchdog.scheduler import JobHealth


def daemon(tmp_path: Path) -> tuple[Daemon, FakeClock]:
    cfg = load_text(f"state_dir: {tmp_path}\ntargets:\n  - name: vllm\n    base_url: http://127.0.0.1:1\n"
                    "    model: m\n")
    clock = FakeClock()
    d = Daemon(cfg, PolicySet([]), clock=clock)
    d.scheduler = SimpleNamespace(running=True)  # type: ignore[assignment]
    return d, clock


def test_healthy_while_jobs_complete(tmp_path: Path) -> None:
    """Jobs that finished recently keep the loop healthy."""
    d, clock = daemon(tmp_path)
    d.jobs["vllm:liveness"] = JobHealth(period_s=10, timeout_s=5, last_done=clock.monotonic())
    clock.advance(30)
    assert d.loop_healthy() == (True, "ok")


def test_stuck_job_makes_the_loop_unhealthy(tmp_path: Path) -> None:
    """A job running longer than its timeout (+10 s slack) is reported as stuck."""
    d, clock = daemon(tmp_path)
    d.jobs["vllm:canary"] = JobHealth(period_s=30, timeout_s=20, running_since=clock.monotonic())
    clock.advance(29)
    assert d.loop_healthy()[0] is True
    clock.advance(2)
    healthy, why = d.loop_healthy()
    assert not healthy and why.startswith("job vllm:canary stuck for 31 s")


def test_silent_job_makes_the_loop_unhealthy(tmp_path: Path) -> None:
    """A job that has not completed for 2 × (period + timeout) + 30 s is reported as silent."""
    d, clock = daemon(tmp_path)
    d.jobs["vllm:liveness"] = JobHealth(period_s=10, timeout_s=5, last_done=clock.monotonic())
    clock.advance(61)
    healthy, why = d.loop_healthy()
    assert not healthy and why == "job vllm:liveness has not completed for 61 s"


def test_stopped_scheduler_is_unhealthy(tmp_path: Path) -> None:
    """No running scheduler: unhealthy."""
    d, _ = daemon(tmp_path)
    d.scheduler = None
    assert d.loop_healthy() == (False, "scheduler not running")
