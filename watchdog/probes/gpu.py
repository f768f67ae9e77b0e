"""GPU probe over NVML (`NvmlBackend`): per-device state plus a critical-event (Xid) thread.

Stage: probe. It only observes: each `check()` reads every device (uuid, name, memory, utilization,
temperature, ECC, retired pages / remapped rows, compute processes) in one worker thread, drains the
events that the Xid thread queued since the last run, and returns them as plain values. Judging
(thresholds, severities, which Xid matters) is `watchdog.detectors.host.GpuDetector`'s job.

On a host without NVML (no library, no driver) the probe logs ONE line, returns status UNKNOWN with
`values["available"] = False` every time, and stays quiet; it retries `init` silently every
`reinit_after_s`. A hung NVML call (known with a GPU falling off the bus) never blocks the daemon:
the sample has a deadline and no second sample thread is started while one is stuck.

This module must never decide severities, never call NVML on the event loop thread, and never
kill or touch the processes it lists.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Mapping
from typing import Any

from watchdog.adapters.nvml import (
    CRITICAL_EVENT_MASK,
    FieldNotSupported,
    GpuEvent,
    GpuLost,
    GpuProcess,
    NvmlBackend,
    NvmlError,
    NvmlUnavailable,
    RealNvml,
)
from watchdog.clock import Clock, SystemClock
from watchdog.config.host import APPLICATION_XIDS, DEFAULT_XID_SEVERITY, GpuSettings
from watchdog.model import ProbeResult, Status

log = logging.getLogger(__name__)

_FIELDS = (
    "name",
    "memory",
    "utilization",
    "temperature",
    "ecc_uncorrected_volatile",
    "retired_pages_pending",
    "remapped_rows",
)


class GpuProbe:
    """`Probe` over every GPU of the host. Call `aclose()` at shutdown (stops the Xid thread)."""

    def __init__(
        self,
        settings: GpuSettings | None = None,
        backend: NvmlBackend | None = None,
        *,
        target: str = "host",
        clock: Clock | None = None,
        name: str = "gpu",
    ) -> None:
        self.name = name
        self.target = target
        self.settings = settings or GpuSettings()
        self.backend: NvmlBackend = backend if backend is not None else RealNvml()
        self.clock: Clock = clock or SystemClock()
        self._initialised = False
        self._unavailable: str | None = None
        self._last_init_try: float | None = None
        self._inflight: asyncio.Future[dict[str, Any]] | None = None
        self._inflight_since = 0.0
        self._events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.settings.max_events_buffered
        )
        self._events_dropped = 0
        self._events_lock = threading.Condition()
        self._events_state = "off"  # off | running | unsupported | failed | stopped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # set once the event thread has opened its event set or given up (see `events_state`)
        self.events_ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    async def _ensure_init(self) -> bool:
        if self._initialised:
            return True
        now = self.clock.monotonic()
        if self._last_init_try is not None and now - self._last_init_try < self.settings.reinit_after_s:
            return False
        first = self._last_init_try is None
        self._last_init_try = now
        try:
            await asyncio.to_thread(self.backend.init)
        except NvmlUnavailable as e:
            if first:
                log.warning(
                    "GPU probe: NVML unavailable on this host (%s); GPU checks are off, status UNKNOWN; "
                    "retrying silently every %.0f s",
                    e,
                    self.settings.reinit_after_s,
                )
            self._unavailable = str(e)
            return False
        except GpuLost as e:
            self._unavailable = None
            raise _AllLost(str(e)) from e
        if self._unavailable is not None:
            log.warning("GPU probe: NVML is available now (was: %s)", self._unavailable)
        self._unavailable = None
        self._initialised = True
        if self.settings.xid_events:
            self._start_event_thread()
        return True

    @property
    def events_state(self) -> str:
        """off | running | unsupported | failed | stopped."""
        return self._events_state

    def _start_event_thread(self) -> None:
        self._stop.clear()
        self.events_ready.clear()
        self._events_state = "running"
        self._thread = threading.Thread(target=self._event_loop, name="nvml-xid-events", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        """Stop the event thread (within one wait timeout) and shut NVML down."""
        self._stop.set()
        t = self._thread
        if t is not None:
            await asyncio.to_thread(t.join, self.settings.xid_wait_ms / 1000.0 + 2.0)
            self._thread = None
        if self._initialised:
            self._initialised = False
            await asyncio.to_thread(self.backend.shutdown)

    # -- event thread ----------------------------------------------------------------------------
    def _queue_event(self, ev: dict[str, Any]) -> None:
        with self._events_lock:
            if len(self._events) == self._events.maxlen:
                self._events_dropped += 1
            self._events.append(ev)
            self._events_lock.notify_all()

    def wait_events(self, n: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until at least `n` events are queued (or `timeout_s`); True if they are. For tests and
        the real-GPU check; the daemon never calls it."""
        with self._events_lock:
            return self._events_lock.wait_for(lambda: len(self._events) >= n, timeout=timeout_s)

    def _event_loop(self) -> None:
        b = self.backend
        try:
            self._run_events(b)
        finally:
            self.events_ready.set()

    def _run_events(self, b: NvmlBackend) -> None:
        try:
            n = b.open_events(CRITICAL_EVENT_MASK)
        except FieldNotSupported as e:
            self._events_state = "unsupported"
            log.info("GPU probe: NVML critical events are not supported here (%s); Xid watch is off", e)
            return
        except GpuLost as e:
            self._events_state = "failed"
            self._queue_event({"kind": "gpu_lost", "uuid": None, "xid": None, "detail": str(e),
                               "at": self.clock.time()})
            return
        except NvmlError as e:
            self._events_state = "failed"
            log.warning("GPU probe: cannot open the NVML event set (%s); Xid watch is off", e)
            return
        log.info("GPU probe: watching critical Xid events on %d GPU(s)", n)
        self.events_ready.set()
        errors = 0
        try:
            while not self._stop.is_set():
                try:
                    ev = b.wait_event(self.settings.xid_wait_ms)
                except GpuLost as e:
                    self._queue_event({"kind": "gpu_lost", "uuid": None, "xid": None, "detail": str(e),
                                       "at": self.clock.time()})
                    self._events_state = "failed"
                    return
                except NvmlError as e:
                    errors += 1
                    if errors >= 10:
                        self._events_state = "failed"
                        log.warning("GPU probe: NVML event wait keeps failing (%s); Xid watch is off", e)
                        return
                    self._stop.wait(1.0)
                    continue
                errors = 0
                if ev is not None:
                    self._queue_event(_event_dict(ev, self.clock.time()))
        finally:
            try:
                b.close_events()
            except NvmlError:
                pass
            if self._events_state == "running":
                self._events_state = "stopped"

    def _drain_events(self) -> tuple[list[dict[str, Any]], int]:
        with self._events_lock:
            evs = list(self._events)
            self._events.clear()
            dropped, self._events_dropped = self._events_dropped, 0
        return evs, dropped

    # -- sampling ----------------------------------------------------------------------------------
    def _sample(self) -> dict[str, Any]:
        """Runs in a worker thread: read every device. Never raises NvmlError."""
        b = self.backend
        try:
            count = b.device_count()
        except GpuLost as e:
            return {"lost_all": True, "error": str(e), "count": None, "devices": []}
        except NvmlError as e:
            return {"lost_all": False, "error": str(e), "count": None, "devices": []}
        devices: list[dict[str, Any]] = []
        for i in range(count):
            devices.append(self._read_device(i))
        return {"lost_all": False, "error": None, "count": count, "devices": devices}

    def _read_device(self, i: int) -> dict[str, Any]:
        b = self.backend
        d: dict[str, Any] = {"index": i, "uuid": None, "lost": False, "unsupported": [], "errors": {}}
        try:
            d["uuid"] = b.uuid(i)
        except GpuLost as e:
            d["lost"] = True
            d["errors"]["uuid"] = str(e)
            return d
        except NvmlError as e:
            d["errors"]["uuid"] = str(e)
            return d
        fields = _FIELDS + (("compute_processes",) if self.settings.list_processes else ())
        for fld in fields:
            try:
                v = getattr(b, fld)(i)
            except GpuLost as e:
                d["lost"] = True
                d["errors"][fld] = str(e)
                return d
            except FieldNotSupported:
                d["unsupported"].append(fld)
                continue
            except NvmlError as e:
                d["errors"][fld] = str(e)
                continue
            if fld == "memory":
                d["memory_used_bytes"] = v.used
                d["memory_total_bytes"] = v.total
                d["memory_used_percent"] = round(100.0 * v.used / v.total, 3) if v.total > 0 else None
            elif fld == "utilization":
                d["utilization_percent"] = v
            elif fld == "temperature":
                d["temperature_c"] = v
            elif fld == "remapped_rows":
                d["remapped_rows_corrected"] = v.corrected
                d["remapped_rows_uncorrected"] = v.uncorrected
                d["remapped_rows_pending"] = v.pending
                d["remapped_rows_failure"] = v.failure
            elif fld == "compute_processes":
                d["processes"] = [{"pid": p.pid, "used_memory_bytes": p.used_memory} for p in v]
            else:
                d[fld] = v
        return d

    async def check(self) -> ProbeResult:
        t0 = self.clock.monotonic()
        try:
            ready = await self._ensure_init()
        except _AllLost as e:
            return self._result(Status.FAIL, f"GPU is lost at NVML init: {e}",
                                {"available": True, "lost_all": True, "devices": [], "error": str(e)}, t0)
        if not ready:
            return self._result(
                Status.UNKNOWN,
                "NVML unavailable: GPU checks are off on this host",
                {"available": False, "reason": self._unavailable or "not initialised"},
                t0,
            )
        if self._inflight is not None and not self._inflight.done():
            stuck = self.clock.monotonic() - self._inflight_since
            events, dropped = self._drain_events()
            return self._result(
                Status.FAIL,
                f"an NVML device read has been stuck for {stuck:.0f} s",
                {"available": True, "hung": True, "hung_s": stuck, "devices": [], "events": events,
                 "events_dropped": dropped, "events_state": self._events_state},
                t0,
            )
        fut = asyncio.ensure_future(asyncio.to_thread(self._sample))
        self._inflight = fut
        self._inflight_since = self.clock.monotonic()
        try:
            sample = await asyncio.wait_for(asyncio.shield(fut), timeout=self.settings.timeout_s)
        except TimeoutError:
            events, dropped = self._drain_events()
            return self._result(
                Status.FAIL,
                f"NVML device read did not answer within {self.settings.timeout_s:.0f} s",
                {"available": True, "hung": True, "hung_s": self.settings.timeout_s, "devices": [],
                 "events": events, "events_dropped": dropped, "events_state": self._events_state},
                t0,
            )
        self._inflight = None
        events, dropped = self._drain_events()
        values: dict[str, Any] = {
            "available": True,
            **sample,
            "events": events,
            "events_dropped": dropped,
            "events_state": self._events_state,
        }
        lost = [d for d in sample["devices"] if d["lost"]]
        if sample["lost_all"]:
            status, summary = Status.FAIL, f"GPU is lost: {sample['error']}"
        elif sample["count"] is None:
            status, summary = Status.UNKNOWN, f"NVML device count failed: {sample['error']}"
        elif lost:
            status = Status.FAIL
            summary = "GPU lost: " + ", ".join(str(d["uuid"] or f"index {d['index']}") for d in lost)
        else:
            status = Status.OK
            summary = f"{sample['count']} GPU(s) read"
            if events:
                summary += f", {len(events)} event(s)"
        return self._result(status, summary, values, t0)

    def _result(self, status: Status, summary: str, values: Mapping[str, Any], t0: float) -> ProbeResult:
        end = self.clock.monotonic()
        return ProbeResult(
            probe=self.name,
            target=self.target,
            status=status,
            summary=summary,
            values=dict(values),
            duration_s=max(0.0, end - t0),
            observed_at=self.clock.time(),
            monotonic=end,
        )


class _AllLost(Exception):
    pass


def _event_dict(ev: GpuEvent, at: float) -> dict[str, Any]:
    return {"kind": ev.kind, "uuid": ev.uuid, "xid": ev.xid, "event_type": ev.event_type, "data": ev.data,
            "at": at}


def gpu_processes(result: ProbeResult) -> dict[str, list[GpuProcess]]:
    """Compute processes per GPU uuid from a GpuProbe result (to find orphaned vLLM processes that
    still hold GPU memory, vllm.md §1.5). PIDs are as NVML sees them (host PIDs)."""
    out: dict[str, list[GpuProcess]] = {}
    for d in result.values.get("devices", []) or []:
        uuid = d.get("uuid")
        if not uuid or "processes" not in d:
            continue
        out[str(uuid)] = [GpuProcess(int(p["pid"]), p.get("used_memory_bytes")) for p in d["processes"]]
    return out


__all__ = ["APPLICATION_XIDS", "DEFAULT_XID_SEVERITY", "GpuProbe", "GpuSettings", "gpu_processes"]
