"""The emulator's fault catalogue and its JSON control file.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

`FAULT_PARAMS` names every fault and the params it takes (`COMMON_PARAMS` are taken by all), `validate_fault`
checks a name and its params, and `ControlFile` re-reads `{"fault": NAME, "params": {...}}` whenever its stat
changes. Fault persistence across a restart follows what a restart really fixes: *sticky* faults (startup
ones, and any with a condition on the running config such as `above_gmu`) are re-applied at every start
while the file names them; *one-shot* faults are consumed (their write's signature goes to
`<control-file>.consumed`), so a restart does not re-apply the same write. `params.sticky` overrides that.

It must never: import anything outside the Python standard library (the emulator runs inside bare
containers on the host's interpreter); apply a fault itself (`core.Emulator` does).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COMMON_PARAMS = {"above_gmu": float, "below_gmu": float, "above_max_num_seqs": int, "sticky": bool}
FAULT_PARAMS: dict[str, dict[str, type]] = {
    "none": {},
    "engine_death": {"exit_after_s": float, "keep_alive": bool, "cause": str},
    "cuda_oom": {"exit_after_s": float, "keep_alive": bool, "after_s": float, "tried_mib": float},
    "hung_engine": {},
    "hung_server": {},
    "startup_kv_cache": {},
    "startup_free_memory": {"free_gib": float, "total_gib": float},
    "startup_max_seq_len": {"estimated_max_model_len": int, "available_kv_gib": float},
    "gpu_not_visible": {},
    "slow": {"latency_s": float},
    "errors": {"rate": float},
    "memory_hog": {"chunk_mib": float, "interval_s": float, "limit_mib": float},
    "exit": {"code": int},
}
STARTUP_FAULTS = frozenset({"startup_kv_cache", "startup_free_memory", "startup_max_seq_len", "gpu_not_visible"})
STICKY_BY_DEFAULT = STARTUP_FAULTS
CONDITION_PARAMS = ("above_gmu", "below_gmu", "above_max_num_seqs")

Note = Callable[[str], None]


class FaultError(ValueError):
    """A fault name or parameter that the emulator does not know or cannot use."""


@dataclass
class Fault:
    """The fault in force: its name, validated params, where it came from and since when."""

    name: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "default"
    since: float = field(default_factory=time.time)

    @property
    def sticky(self) -> bool:
        if "sticky" in self.params:
            return bool(self.params["sticky"])
        return self.name in STICKY_BY_DEFAULT or any(k in self.params for k in CONDITION_PARAMS)


def conditions_hold(params: dict[str, Any], gmu: float, max_num_seqs: int) -> bool:
    """Whether a fault's conditions (`above_gmu`, `below_gmu`, `above_max_num_seqs`) hold for this config."""
    if "above_gmu" in params and not gmu > params["above_gmu"]:
        return False
    if "below_gmu" in params and not gmu < params["below_gmu"]:
        return False
    return not ("above_max_num_seqs" in params and not max_num_seqs > params["above_max_num_seqs"])


def _check_param(key: str, want: type, value: Any) -> Any:
    """One param's value, normalised to its type, or FaultError naming it."""
    if want is bool:
        if not isinstance(value, bool):
            raise FaultError(f"params.{key}: must be true or false, got {value!r}")
        return value
    if want is str:
        if not isinstance(value, str):
            raise FaultError(f"params.{key}: must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"params.{key}: must be a number, got {value!r}")
    if want is int and value != int(value):
        raise FaultError(f"params.{key}: must be a whole number, got {value!r}")
    if value < 0:
        raise FaultError(f"params.{key}: must be >= 0, got {value!r}")
    return int(value) if want is int else float(value)


def validate_fault(name: Any, params: Any) -> tuple[str, dict[str, Any]]:
    """Check a fault name and its params; return them normalised, or raise FaultError naming the field."""
    if not isinstance(name, str) or name not in FAULT_PARAMS:
        raise FaultError(f"fault: unknown fault {name!r} (one of: {', '.join(FAULT_PARAMS)})")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise FaultError(f"params: must be a JSON object, got {type(params).__name__}")
    allowed = {**COMMON_PARAMS, **FAULT_PARAMS[name]}
    out: dict[str, Any] = {}
    for key, value in params.items():
        want = allowed.get(key)
        if want is None:
            raise FaultError(f"params.{key}: not a parameter of fault {name!r} (known: {', '.join(sorted(allowed))})")
        out[key] = _check_param(key, want, value)
    if name == "errors" and not 0.0 <= out.get("rate", 1.0) <= 1.0:
        raise FaultError(f"params.rate: must be between 0 and 1, got {out['rate']!r}")
    return name, out


class ControlFile:
    """The JSON control file: re-read when its stat changes; one-shot faults are marked consumed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.consumed_path = path + ".consumed"
        self.last_stat: tuple[int, int, int] | None = None
        self.lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> tuple[bool, tuple[int, int, int] | None]:
        st = self._stat()
        return st != self.last_stat, st

    def read(self) -> tuple[str, dict[str, Any], str]:
        """Return (fault, params, signature); raise FaultError for a bad file."""
        with open(self.path, "rb") as fh:
            raw = fh.read()
        st = self._stat()
        sig = hashlib.sha256(raw + repr(st).encode()).hexdigest()[:32]
        try:
            doc = json.loads(raw.decode() or "{}")
        except (UnicodeDecodeError, ValueError) as e:
            raise FaultError(f"{self.path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise FaultError(f"{self.path}: must hold a JSON object like {{\"fault\": \"none\"}}")
        unknown = set(doc) - {"fault", "params"}
        if unknown:
            raise FaultError(f"{self.path}: unknown keys {sorted(unknown)} (allowed: fault, params)")
        try:
            name, params = validate_fault(doc.get("fault", "none"), doc.get("params"))
        except FaultError as e:
            raise FaultError(f"{self.path}: {e}") from None
        return name, params, sig

    def consumed(self) -> str:
        try:
            with open(self.consumed_path) as fh:
                return fh.read().strip()
        except OSError:
            return ""

    def mark_consumed(self, sig: str) -> str | None:
        tmp = f"{self.consumed_path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(sig + "\n")
            os.replace(tmp, self.consumed_path)
        except OSError as e:
            return f"cannot record the consumed fault in {self.consumed_path}: {e}"
        return None

    def _consume(self, name: str, params: dict[str, Any], sig: str, note: Note) -> None:
        """Record a one-shot fault's write as consumed (a sticky one, or `none`, is never consumed)."""
        if not Fault(name, params).sticky and name != "none":
            problem = self.mark_consumed(sig)
            if problem:
                note(problem)

    def poll(self, note: Note) -> tuple[str, dict[str, Any]] | None:
        """The fault of a new write to the file, or None when nothing changed (or the file is bad: noted)."""
        with self.lock:
            changed, st = self.changed()
            if not changed:
                return None
            self.last_stat = st
            if st is None:
                return None
            try:
                name, params, sig = self.read()
            except OSError:
                self.last_stat = None
                return None
            except FaultError as e:
                note(f"control file ignored: {e}")
                return None
            self._consume(name, params, sig, note)
        return name, params

    def initial(self, note: Note) -> tuple[str, dict[str, Any]] | None:
        """The fault at start: the file's, unless it is `none` or a one-shot fault already consumed by an
        earlier run (then None)."""
        with self.lock:
            _changed, st = self.changed()
            self.last_stat = st
            if st is None:
                return None
            try:
                name, params, sig = self.read()
            except (OSError, FaultError) as e:
                note(f"control file ignored: {e}")
                return None
            f = Fault(name, params)
            if name == "none" or (not f.sticky and sig == self.consumed()):
                return None
            self._consume(name, params, sig, note)
            return name, params
