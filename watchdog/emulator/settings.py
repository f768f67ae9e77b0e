"""The emulator's command line and configuration: `python -m watchdog.emulator --help` (and
`vllm-watchdog emulate`), vLLM's own environment variables, and the emulated vLLM version.
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

Flags win over the environment (`GPU_MEMORY_UTILIZATION`, `MAX_NUM_SEQS`, `MAX_MODEL_LEN`, `VLLM_API_KEY`),
as with vLLM's image and an env_file; defaults follow the emulated version (0.92 GPU memory from 0.20).

It must never: import anything outside the Python standard library (the emulator runs inside bare
containers on the host's interpreter); echo an API key in an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .faults import COMMON_PARAMS, FAULT_PARAMS, FaultError, validate_fault

Version = tuple[int, int, int]

DEFAULT_MODEL = "google/gemma-3-27b-it"
DEFAULT_VERSION = "0.11.0"
DEFAULT_MAX_MODEL_LEN = 32768
DEFAULT_MAX_NUM_SEQS = 256


def parse_version(text: str) -> Version:
    """`0.11.0`, `v0.8.5.post1` or `0.9` as a comparable (major, minor, patch)."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid vLLM version {text!r} (expected e.g. 0.11.0 or 0.8.5.post1)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@dataclass
class Settings:
    """Everything the emulator runs with, from its flags and environment."""

    host: str
    port: int
    model: str
    served_model_name: str
    api_keys: list[str]
    startup_delay: float
    version_text: str
    version: Version
    control_file: str | None
    fault: str
    fault_params: dict[str, Any]
    gpu_memory_utilization: float
    max_num_seqs: int
    max_model_len: int
    num_gpu_blocks_override: int | None
    tls_cert: str | None
    tls_key: str | None
    access_log: bool
    load_tracking: bool
    log_stats: bool


def _env_number(name: str, raw: str | None, kind: type, default: float, lo: float, hi: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw) if kind is float else int(raw)
    except ValueError:
        what = "number" if kind is float else "whole number"
        raise SystemExit(f"emulator: {name}={raw!r} is not a {what}") from None
    ok = lo < value <= hi if kind is float else lo <= value <= hi
    if not ok:
        rule = f"{lo} < value <= {hi}" if kind is float else f"{lo} <= value <= {hi}"
        raise SystemExit(f"emulator: {name}={raw!r} is out of range ({rule})")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The emulator's flags (vLLM's own names where vLLM has one)."""
    faults = "\n".join(f"  {n:20} {', '.join(sorted(p)) or '-'}" for n, p in FAULT_PARAMS.items())
    epilog = (f"faults and their params (all also take {', '.join(COMMON_PARAMS)}):\n{faults}\n\n"
              "Control file: {\"fault\": NAME, \"params\": {...}}. Sticky faults (startup ones, or any with a "
              "condition) are re-applied at every start; one-shot faults are consumed (<file>.consumed).")
    ap = argparse.ArgumentParser(prog="vllm-watchdog emulate", description="Emulated vLLM OpenAI server with "
                                 "injectable faults (for the demo and tests).", epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"model (and served name) (default {DEFAULT_MODEL})")
    ap.add_argument("--served-model-name", default=None, help="served model name (default: --model)")
    ap.add_argument("--api-key", action="append", default=None,
                    help="API key guarding /v1 (repeatable; default env VLLM_API_KEY)")
    ap.add_argument("--startup-delay", type=float, default=0.0,
                    help="seconds of 'model loading' during which the port refuses connections")
    ap.add_argument("--version", dest="version_text", default=DEFAULT_VERSION,
                    help=f"emulated vLLM version (default {DEFAULT_VERSION})")
    ap.add_argument("--control-file", default=None, help='JSON {"fault": NAME, "params": {...}}, re-read continuously')
    ap.add_argument("--fault", default="none", help=f"initial fault: {', '.join(FAULT_PARAMS)}")
    ap.add_argument("--fault-params", default="{}", help="JSON object of the initial fault's params")
    ap.add_argument("--gpu-memory-utilization", default=None,
                    help="default env GPU_MEMORY_UTILIZATION, else 0.9 (0.92 from vLLM 0.20)")
    ap.add_argument("--max-num-seqs", default=None, help="default env MAX_NUM_SEQS, else 256")
    ap.add_argument("--max-model-len", default=None, help=f"default env MAX_MODEL_LEN, else {DEFAULT_MAX_MODEL_LEN}")
    ap.add_argument("--num-gpu-blocks-override", type=int, default=None, help="KV cache size in blocks of 16 tokens")
    ap.add_argument("--tls-cert", "--ssl-certfile", dest="tls_cert", default=None, help="serve HTTPS with this cert")
    ap.add_argument("--tls-key", "--ssl-keyfile", dest="tls_key", default=None, help="private key for --tls-cert")
    ap.add_argument("--disable-uvicorn-access-log", action="store_true")
    ap.add_argument("--enable-server-load-tracking", action="store_true")
    ap.add_argument("--disable-log-stats", action="store_true", help="no vllm:* metrics (as vLLM)")
    return ap


def _flag_or_env(flag: str, value: str | None, env: str) -> tuple[str, str | None]:
    """(where it came from, raw value): the flag when given, else the environment variable."""
    return (flag, value) if value is not None else (env, os.environ.get(env))


def parse_settings(argv: Sequence[str]) -> Settings:
    """Settings from the command line and environment; SystemExit (argparse's, or a message) when invalid."""
    ap = build_parser()
    a = ap.parse_args(list(argv))
    try:
        version = parse_version(a.version_text)
    except argparse.ArgumentTypeError as e:
        ap.error(f"--version: {e}")
    gmu_default = 0.92 if version >= (0, 20, 0) else 0.9
    gmu_src = _flag_or_env("--gpu-memory-utilization", a.gpu_memory_utilization, "GPU_MEMORY_UTILIZATION")
    seqs_src = _flag_or_env("--max-num-seqs", a.max_num_seqs, "MAX_NUM_SEQS")
    len_src = _flag_or_env("--max-model-len", a.max_model_len, "MAX_MODEL_LEN")
    gmu = _env_number(gmu_src[0], gmu_src[1], float, gmu_default, 0.0, 1.0)
    seqs = int(_env_number(seqs_src[0], seqs_src[1], int, DEFAULT_MAX_NUM_SEQS, 1, 1_000_000))
    mlen = int(_env_number(len_src[0], len_src[1], int, DEFAULT_MAX_MODEL_LEN, 16, 10_000_000))
    try:
        fparams = json.loads(a.fault_params)
        fault, fparams = validate_fault(a.fault, fparams)
    except (ValueError, FaultError) as e:
        ap.error(f"--fault/--fault-params: {e}")
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    keys = a.api_key if a.api_key else ([os.environ["VLLM_API_KEY"]] if os.environ.get("VLLM_API_KEY") else [])
    return Settings(
        host=a.host, port=a.port, model=a.model, served_model_name=a.served_model_name or a.model,
        api_keys=keys, startup_delay=max(0.0, a.startup_delay), version_text=a.version_text, version=version,
        control_file=a.control_file, fault=fault, fault_params=fparams, gpu_memory_utilization=gmu,
        max_num_seqs=seqs, max_model_len=mlen, num_gpu_blocks_override=a.num_gpu_blocks_override,
        tls_cert=a.tls_cert, tls_key=a.tls_key, access_log=not a.disable_uvicorn_access_log,
        load_tracking=a.enable_server_load_tracking, log_stats=not a.disable_log_stats,
    )
