"""A vLLM OpenAI-compatible server emulator with injectable faults (`vllm-watchdog emulate`,
`python -m watchdog.emulator`).
Stage: none — it is the *peer* the pipeline watches (demo, integration and Docker tests), never part of it.

It reproduces what a watchdog can observe of a real `vllm serve` (reference/vllm.md §1, §2, §3, §5): the
port does not listen while the "model loads" while vLLM's startup log lines appear; `/health`, `/ping`,
`/v1/models`, `/version`, `/load`, `/metrics` with the real metric names, labels and buckets of the emulated
version; completions (also streaming); `--api-key` guarding `/v1` only. Faults reproduce real failures with
vLLM's real log lines and exit codes. The modules:

    settings   flags, environment, the emulated version      faults    fault catalogue, control file
    core       the Emulator: start-up, faults, shutdown       engine    scheduler model, GPU footprint
    server     HTTP(S) routes                                 metrics   Prometheus exposition by version
    loglines   vLLM's log lines by version                    cli       main()

It must never: import anything outside the Python standard library, nor any `watchdog` module outside this
package (it runs inside bare containers on the host's interpreter, as `python3 -m watchdog.emulator` with
only the repository on the path; tests/emulator/test_emulator_package.py checks it); listen anywhere but the
address it is given (127.0.0.1 by default); print an API key.
"""

from .cli import main
from .core import Emulator
from .engine import ClientGone, Engine, EngineDead, GenResult
from .faults import FAULT_PARAMS, STARTUP_FAULTS, ControlFile, Fault, FaultError, validate_fault
from .loglines import Log
from .metrics import Family, Metrics
from .settings import DEFAULT_MODEL, DEFAULT_VERSION, Settings, Version, build_parser, parse_settings, parse_version

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_VERSION",
    "FAULT_PARAMS",
    "STARTUP_FAULTS",
    "ClientGone",
    "ControlFile",
    "Emulator",
    "Engine",
    "EngineDead",
    "Family",
    "Fault",
    "FaultError",
    "GenResult",
    "Log",
    "Metrics",
    "Settings",
    "Version",
    "build_parser",
    "main",
    "parse_settings",
    "parse_version",
    "validate_fault",
]
