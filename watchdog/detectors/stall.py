"""Stalled-engine detector: requests are running or waiting but no token has been produced for
`stall_after_s` → P0 `engine_hung`, even while `/health` answers 200. Stage: detect.

Why: a hung EngineCore (NCCL/P2P deadlock, wedged kernel) keeps `/health`, `/v1/models` and
`/metrics` answering; every `vllm:*` value freezes (reference/vllm.md §1.3, §2.3). Progress is
`vllm:generation_tokens_total` or `vllm:iteration_tokens_total_count` (one per engine step, so a long
chunked prefill with no output token yet still counts as progress). The stall clock starts at the
first scrape that proves demand without progress (the earlier scrape's time when demand was already
there), so an idle server never alarms and a request arriving after hours of idleness is not "stuck
for hours". Resolves when tokens move again, the queue empties, or the server restarts (a counter
reset). A failed scrape is no information: timers are left as they are.

This detector never does I/O and never acts; it publishes Finding edges.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchdog.config.detectors import StallSettings
from watchdog.model import Finding, IncidentKind, ProbeResult, Progress, Status
from watchdog.vllm_metrics import MetricsSnapshot, ModelMetrics, reset_between

REMEDY = (
    "engine hung (tokens stopped while requests are queued): capture a stack dump (py-spy dump --pid), "
    "restart; if it stalls again right after the restart, reset the GPU or reboot the host (reference/vllm.md "
    "§3.8); for TP>1 consider --disable-custom-all-reduce or NCCL_P2P_DISABLE=1"
)


@dataclass
class _State:
    prev: ModelMetrics | None = None
    prev_at: float = 0.0
    before: ModelMetrics | None = None  # the scrape before `prev` (for `progress()`)
    before_at: float = 0.0
    pending_since: float | None = None
    active: bool = False
    reason: str = ""


def _progress_counters(m: ModelMetrics) -> tuple[float | None, float | None]:
    return m.counters.get("generation_tokens"), m.iteration_steps


def _demand(m: ModelMetrics) -> float | None:
    r, w = m.gauges.get("running"), m.gauges.get("waiting")
    if r is None and w is None:
        return None
    return (r or 0.0) + (w or 0.0)


class StallDetector:
    """Judges `MetricsProbe` results of one target (probe name `probe`), one state per `model_name`."""

    name = "stall"

    def __init__(self, target: str, settings: StallSettings | None = None, *, probe: str = "metrics") -> None:
        self.target = target
        self.settings = settings or StallSettings()
        self.probe = probe
        self._models: dict[str, _State] = {}
        self._prev_snap: MetricsSnapshot | None = None
        self._scrape_failed = False

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        if result.probe != self.probe or result.target != self.target:
            return []
        if result.status == Status.FAIL:
            self._scrape_failed = True
            return []
        snap = result.values.get("snapshot")
        if not isinstance(snap, MetricsSnapshot):
            return []
        return self.observe_snapshot(snap)

    def reason(self, model: str) -> str:
        """Why the model is (not) judged right now, for status pages."""
        st = self._models.get(model)
        return st.reason if st else "no scrape yet"

    def progress(self) -> Progress | None:
        """Did any model produce tokens (or engine steps) between the last two scrapes? None when the last
        scrape failed or two scrapes were not seen yet: for a canary timeout that means "no progress"."""
        if self._scrape_failed:
            return None
        seen: Progress | None = None
        for st in self._models.values():
            if st.prev is None or st.before is None:
                continue
            gen, steps = _progress_counters(st.prev)
            pgen, psteps = _progress_counters(st.before)
            moved = (gen is not None and pgen is not None and gen > pgen) or (
                steps is not None and psteps is not None and steps > psteps
            )
            p = Progress(moving=moved, running=st.prev.gauges.get("running"), waiting=st.prev.gauges.get("waiting"),
                         interval_s=st.prev_at - st.before_at)
            if moved:
                return p
            seen = seen or p
        return seen

    def observe_snapshot(self, snap: MetricsSnapshot) -> list[Finding]:
        if snap.error is not None:
            self._scrape_failed = True
            return []
        self._scrape_failed = False
        restarted = None
        if self._prev_snap is not None:
            if snap.at <= self._prev_snap.at:
                return []
            restarted = reset_between(self._prev_snap, snap)
        self._prev_snap = snap
        out: list[Finding] = []
        for model, m in snap.models.items():
            st = self._models.setdefault(model, _State())
            f = self._judge(model, st, m, snap.at, restarted)
            if f is not None:
                out.append(f)
            st.before, st.before_at = st.prev, st.prev_at
            st.prev, st.prev_at = m, snap.at
        return out

    def _judge(self, model: str, st: _State, m: ModelMetrics, at: float, restarted: str | None) -> Finding | None:
        s = self.settings
        gen, steps = _progress_counters(m)
        demand = _demand(m)
        if gen is None and steps is None:
            st.reason = "no generation_tokens_total / iteration_tokens_total on the page: cannot judge"
            return None
        if demand is None:
            st.reason = "no num_requests_running / num_requests_waiting on the page: cannot judge"
            return None
        prev = st.prev
        if prev is None:
            st.reason = "first scrape"
            return None
        if restarted is not None:
            st.pending_since = None
            st.reason = restarted
            return self._resolve(model, st, m, at, f"server restarted ({restarted})")
        pgen, psteps = _progress_counters(prev)
        moved = (gen is not None and pgen is not None and gen > pgen) or (
            steps is not None and psteps is not None and steps > psteps
        )
        if moved:
            st.pending_since = None
            st.reason = "tokens moving"
            return self._resolve(model, st, m, at, "tokens are moving again")
        if demand < s.min_demand:
            st.pending_since = None
            st.reason = "idle"
            return self._resolve(model, st, m, at, "no request running or waiting")
        if st.pending_since is None:
            prev_demand = _demand(prev)
            # demand was already there at the previous scrape and nothing moved since: stalled since then
            st.pending_since = st.prev_at if prev_demand is not None and prev_demand >= s.min_demand else at
        stalled = at - st.pending_since
        st.reason = f"no progress for {stalled:.0f} s with {demand:.0f} request(s) in flight"
        if st.active or stalled + 1e-9 < s.stall_after_s:
            return None
        st.active = True
        return Finding(
            self.target,
            IncidentKind.ENGINE_HUNG.value,
            s.severity,
            f"{model}: engine hung — {demand:.0f} request(s) running/waiting and no token produced for "
            f"{stalled:.0f} s",
            active=True,
            labels={"model": model},
            evidence=self._evidence(model, m, stalled),
            source=self.name,
            remedy=REMEDY,
        )

    def _resolve(self, model: str, st: _State, m: ModelMetrics, at: float, why: str) -> Finding | None:
        if not st.active:
            return None
        st.active = False
        return Finding(
            self.target,
            IncidentKind.ENGINE_HUNG.value,
            self.settings.severity,
            f"{model}: resolved — {why}",
            active=False,
            labels={"model": model},
            evidence=self._evidence(model, m, 0.0),
            source=self.name,
            remedy=REMEDY,
        )

    def _evidence(self, model: str, m: ModelMetrics, stalled: float) -> dict[str, float | str | None]:
        gen, steps = _progress_counters(m)
        return {
            "model": model,
            "running": m.gauges.get("running"),
            "waiting": m.gauges.get("waiting"),
            "generation_tokens_total": gen,
            "iteration_steps_total": steps,
            "stalled_for_s": round(stalled, 1),
            "stall_after_s": self.settings.stall_after_s,
        }


__all__ = ["StallDetector", "StallSettings"]
