"""The emulator's tiny engine model: the emulated GPU and model footprint, and a single-engine scheduler
(admission up to `max_num_seqs` with enough free KV blocks, one prefill step then one decode step per
token, self-preemption when the KV cache is full), so the gauges and counters behave like vLLM's.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

Stats are recorded only as engine steps produce outputs, so every vllm:* value freezes while the engine
hangs. It must never: import anything outside the Python standard library (the emulator runs inside bare
containers on the host's interpreter); touch a metric without holding `Engine.cond`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import Metrics

# the emulated GPU (an H100 80GB) and model footprint, used for the KV cache size and the messages
GPU_TOTAL_GIB = 79.19
WEIGHTS_GIB = 51.4
ACTIVATION_GIB = 1.5
KV_MIB_PER_BLOCK = 7.75  # 16 tokens x 62 layers x 16 kv heads x 128 dims x 2 (k, v) x 2 bytes
BLOCK_SIZE = 16
# emulated engine speed
PREFILL_S = 0.003
TOKEN_S = 0.002
REPLY = ("The quick brown fox jumps over the lazy dog while the emulated engine streams one token "
         "per word until it reaches the end of this sentence.").split()
NATURAL_TOKENS = 16


class EngineDead(Exception):
    """The request hit a dead engine."""


class ClientGone(Exception):
    """The client closed the connection (a streamed request is aborted)."""


@dataclass
class GenResult:
    """What a finished request generated."""

    tokens: int
    finish_reason: str


@dataclass
class _Request:
    """One request's scheduler state: whether it holds a running slot, its KV blocks, its tokens so far."""

    prompt_tokens: int
    admitted: bool = False
    held: int = 0
    generated: int = 0


@dataclass
class _Timing:
    """A finished request's timestamps (monotonic) and inter-token gaps."""

    arrival: float
    admitted: float
    first: float
    end: float
    gaps: list[float]


def blocks(tokens: int) -> int:
    """KV blocks needed for `tokens` tokens."""
    return -(-tokens // BLOCK_SIZE)


class Engine:
    """A single-engine scheduler model: admission up to max_num_seqs with enough free KV blocks, one prefill
    step then one decode step per token, self-preemption when the KV cache is full, and stats recorded
    only as engine steps produce outputs (so every vllm:* value freezes while the engine hangs)."""

    def __init__(self, metrics: Metrics, max_num_seqs: int, total_blocks: int) -> None:
        self.metrics = metrics
        self.max_num_seqs = max_num_seqs
        self.cond = threading.Condition()
        self.total_blocks = total_blocks
        self.free_blocks = total_blocks
        self.running = 0
        self.waiting = 0
        self.dead = False
        self.hung = False
        self.in_flight = 0
        self.window_prompt = 0
        self.window_gen = 0

    # all callers hold self.cond
    def _gauges(self) -> None:
        m = self.metrics
        m.set("vllm:num_requests_running", float(self.running))
        m.set("vllm:num_requests_waiting", float(self.waiting))
        usage = 1.0 - self.free_blocks / self.total_blocks if self.total_blocks else 0.0
        m.set("vllm:kv_cache_usage_perc", usage)
        m.set("vllm:gpu_cache_usage_perc", usage)

    def _check(self) -> None:
        """Block while the engine hangs; raise if it is dead."""
        while self.hung and not self.dead:
            self.cond.wait(0.25)
        if self.dead:
            raise EngineDead()

    def _admissible(self, tokens: int) -> bool:
        return self.running < self.max_num_seqs and self.free_blocks >= blocks(tokens)

    def _admit(self, tokens: int) -> int:
        self.waiting += 1
        self._gauges()
        try:
            while True:
                self._check()
                if self._admissible(tokens):
                    break
                self.cond.wait(0.25)
        finally:
            self.waiting -= 1
        self.running += 1
        need = blocks(tokens)
        self.free_blocks -= need
        self._gauges()
        return need

    def generate(self, prompt_tokens: int, n_tokens: int, max_tokens: int, finish: str, latency_s: float,
                 on_token: Callable[[int], None] | None = None) -> GenResult:
        """Run one request through admission, prefill and decode; EngineDead when the engine dies meanwhile,
        ClientGone (counted as an abort from V1) when `on_token` finds the client gone."""
        arrival = time.monotonic()
        req = _Request(prompt_tokens)
        with self.cond:
            self.in_flight += 1
        try:
            with self.cond:
                self._check()
                req.held = self._admit(prompt_tokens + 1)
                req.admitted = True
            admit_t = time.monotonic()
            time.sleep(PREFILL_S + latency_s)
            with self.cond:
                self._check()
                self._prefill_step(req)
            first_t = last_t = time.monotonic()
            gaps: list[float] = []
            if on_token:
                on_token(0)
            while req.generated < n_tokens:
                time.sleep(TOKEN_S)
                with self.cond:
                    self._check()
                    self._decode_step(req)
                now = time.monotonic()
                gaps.append(now - last_t)
                last_t = now
                if on_token:
                    on_token(req.generated - 1)
            end = time.monotonic()
            with self.cond:
                self._record(req, _Timing(arrival, admit_t, first_t, end, gaps), max_tokens, finish)
            return GenResult(req.generated, finish)
        except ClientGone:
            with self.cond:
                if self.metrics.v1:
                    self.metrics.inc("vllm:request_success", extra=("abort",))
            raise
        finally:
            with self.cond:
                self.in_flight -= 1
                if req.admitted:
                    self.running -= 1
                    self.free_blocks += req.held
                self._gauges()
                self.cond.notify_all()

    def _prefill_step(self, req: _Request) -> None:
        """The prefill step: the whole prompt and the first token (caller holds self.cond)."""
        m = self.metrics
        m.observe("vllm:iteration_tokens_total", float(req.prompt_tokens))
        m.inc("vllm:prompt_tokens", float(req.prompt_tokens))
        m.inc("vllm:generation_tokens")
        self.window_prompt += req.prompt_tokens
        self.window_gen += 1
        req.generated = 1

    def _decode_step(self, req: _Request) -> None:
        """One decode step: grow the request's KV blocks (preempting it when the cache is full and another
        request runs), then one more token (caller holds self.cond)."""
        m = self.metrics
        while blocks(req.prompt_tokens + req.generated + 1) > req.held:
            if self.free_blocks > 0:
                self.free_blocks -= 1
                req.held += 1
            elif self.running > 1:  # KV cache full: preempt this request, recompute later
                self.free_blocks += req.held
                req.held = 0
                self.running -= 1
                req.admitted = False
                m.inc("vllm:num_preemptions")
                self.cond.notify_all()
                req.held = self._admit(req.prompt_tokens + req.generated + 1)
                req.admitted = True
                m.observe("vllm:iteration_tokens_total", float(req.prompt_tokens + req.generated))
            else:
                break
        m.observe("vllm:iteration_tokens_total", 1.0)
        m.inc("vllm:generation_tokens")
        self.window_gen += 1
        req.generated += 1
        self._gauges()

    def _record(self, req: _Request, t: _Timing, max_tokens: int, finish: str) -> None:
        """A finished request's latency and size histograms and its finished reason (caller holds self.cond)."""
        m = self.metrics
        generated = req.generated
        for g in t.gaps:
            m.observe("vllm:inter_token_latency_seconds", g)
            m.observe("vllm:time_per_output_token_seconds", g)
        if generated > 1:
            m.observe("vllm:request_time_per_output_token_seconds", (t.end - t.first) / (generated - 1))
        m.observe("vllm:e2e_request_latency_seconds", t.end - t.arrival)
        m.observe("vllm:time_to_first_token_seconds", t.first - t.arrival)
        m.observe("vllm:request_queue_time_seconds", t.admitted - t.arrival)
        m.observe("vllm:request_prefill_time_seconds", t.first - t.admitted)
        m.observe("vllm:request_decode_time_seconds", t.end - t.first)
        m.observe("vllm:request_inference_time_seconds", t.end - t.admitted)
        m.observe("vllm:request_prompt_tokens", float(req.prompt_tokens))
        m.observe("vllm:request_generation_tokens", float(generated))
        m.observe("vllm:request_max_num_generation_tokens", float(max_tokens))
        m.observe("vllm:request_params_max_tokens", float(max_tokens))
        m.observe("vllm:request_params_n", 1.0)
        m.inc("vllm:request_success", extra=(finish,))

    def count_error(self) -> None:
        with self.cond:
            if "error" in self.metrics.reasons():
                self.metrics.inc("vllm:request_success", extra=("error",))

    def set_hung(self, hung: bool) -> None:
        with self.cond:
            self.hung = hung
            self.cond.notify_all()

    def kill(self) -> bool:
        with self.cond:
            was = self.dead
            self.dead = True
            self.cond.notify_all()
            return not was
