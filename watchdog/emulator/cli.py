"""The emulator's entry point: `main(argv)` parses the flags (`settings.build_parser`) and runs one
`core.Emulator` until SIGTERM/SIGINT or a fault ends it (`python -m watchdog.emulator`, `vllm-watchdog emulate`).
Stage: none — test equipment: the emulated vLLM server is the *peer* the pipeline watches, never part of it.

It must never: import anything outside the Python standard library (the emulator runs inside bare
containers on the host's interpreter); raise SystemExit out of `main` (it returns the exit code).
"""

from __future__ import annotations

import sys

from .core import Emulator
from .settings import parse_settings


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT or a fault ends it; return the process exit code."""
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse usage errors and bad environment values
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        return int(e.code or 0)
    return Emulator(settings).run()
