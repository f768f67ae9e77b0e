"""When things run: chains of jobs (probes, log reads, runtime state, remediation ticks), each run bounded
and recorded so that a stuck or silent job makes the loop unhealthy. Stage: schedule.

A job is a coroutine function that returns the delay before its next run, so one run at a time per job
and a first probe failure can ask for an immediate re-probe (kubelet). Two implementations share the
bookkeeping: `ApsScheduler` (production, APScheduler on the wall clock) and `ClockScheduler` (asyncio tasks
sleeping on the injected `Clock`: with a `FakeClock` the whole pipeline can be simulated for hours in
seconds). This module must never judge a result, touch a target or import a stage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from watchdog.clock import Clock

log = structlog.get_logger("watchdog.scheduler")

JobFn = Callable[[], Awaitable[float]]
DEFAULT_NEXT_S = 5.0  # a job that raised runs again after this


@dataclass
class JobHealth:
    """One job's bookkeeping for `/healthz` and the systemd watchdog."""

    period_s: float
    timeout_s: float
    last_done: float = 0.0
    running_since: float | None = None


class Scheduling(Protocol):
    """What the composition root needs from a scheduler (APScheduler in production, the clock in tests)."""

    jobs: dict[str, JobHealth]

    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def add(self, job_id: str, fn: JobFn, period_s: float, timeout_s: float, delay: float = 0.0) -> None: ...
    def shutdown(self) -> None: ...


def loop_health(running: bool, jobs: dict[str, JobHealth], now: float) -> tuple[bool, str]:
    """Healthy unless the scheduler stopped, a job is stuck past its timeout, or a job went silent."""
    if not running:
        return False, "scheduler not running"
    for key, j in jobs.items():
        if j.running_since is not None and now - j.running_since > j.timeout_s + 10:
            return False, f"job {key} stuck for {now - j.running_since:.0f} s"
        if j.last_done and now - j.last_done > 2 * (j.period_s + j.timeout_s) + 30:
            return False, f"job {key} has not completed for {now - j.last_done:.0f} s"
    return True, "ok"


class _Chains:
    """Shared chain bookkeeping: run a link, record it, schedule its successor."""

    def __init__(self, clock: Clock, jobs: dict[str, JobHealth] | None = None) -> None:
        self.clock = clock
        self.jobs: dict[str, JobHealth] = {} if jobs is None else jobs
        self._stopped = False

    def add(self, job_id: str, fn: JobFn, period_s: float, timeout_s: float, delay: float = 0.0) -> None:
        self.jobs[job_id] = JobHealth(period_s, timeout_s)
        self._later(job_id, fn, delay)

    def _later(self, job_id: str, fn: JobFn, delay: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _run_link(self, job_id: str, fn: JobFn) -> float:
        """One run, recorded in the job's health; returns the delay before the next run."""
        nxt = DEFAULT_NEXT_S
        job = self.jobs[job_id]
        job.running_since = self.clock.monotonic()
        try:
            nxt = await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job failed", job=job_id)
        finally:
            job.running_since = None
            job.last_done = self.clock.monotonic()
        return nxt

    async def _link(self, job_id: str, fn: JobFn) -> None:
        nxt = await self._run_link(job_id, fn)
        if not self._stopped:
            self._later(job_id, fn, nxt)


class ApsScheduler(_Chains):
    """Production: each link is an APScheduler `date` job with its own id (the running link still counts
    as an instance when it schedules its successor)."""

    def __init__(self, clock: Clock, jobs: dict[str, JobHealth] | None = None) -> None:
        super().__init__(clock, jobs)
        self._aps = AsyncIOScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                   "misfire_grace_time": None})
        self._seq = 0

    @property
    def running(self) -> bool:
        return bool(self._aps.running) and not self._stopped

    def start(self) -> None:
        self._aps.start()

    def _later(self, job_id: str, fn: JobFn, delay: float) -> None:
        if self._stopped or not self._aps.running:
            return
        self._seq += 1
        self._aps.add_job(self._link, "date", args=(job_id, fn),
                          run_date=datetime.now(UTC) + timedelta(seconds=max(0.0, delay)),
                          id=f"{job_id}#{self._seq}", name=job_id, misfire_grace_time=None, max_instances=1)

    def shutdown(self) -> None:
        self._stopped = True
        if self._aps.running:
            self._aps.shutdown(wait=False)


class ClockScheduler(_Chains):
    """Each chain is an asyncio task sleeping on the injected clock: deterministic under a FakeClock."""

    def __init__(self, clock: Clock, jobs: dict[str, JobHealth] | None = None) -> None:
        super().__init__(clock, jobs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    def start(self) -> None:
        self._started = True

    def _later(self, job_id: str, fn: JobFn, delay: float) -> None:
        """One task per chain, looping: sleep on the clock, run, sleep for the delay the run returned."""
        if self._stopped:
            return

        async def chain() -> None:
            nxt = delay
            while not self._stopped:
                await self.clock.sleep(max(0.0, nxt))
                nxt = await self._run_link(job_id, fn)

        self._tasks[job_id] = asyncio.get_running_loop().create_task(chain(), name=f"job:{job_id}")

    def shutdown(self) -> None:
        self._stopped = True
        for t in self._tasks.values():
            t.cancel()

    async def wait_closed(self) -> None:
        for t in list(self._tasks.values()):
            with contextlib.suppress(BaseException):
                await t
