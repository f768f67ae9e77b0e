"""`python -m watchdog.emulator [flags]`: run the vLLM emulator (`--help` lists the flags and faults).
Stage: none — test equipment, never part of the pipeline. It must never import anything outside the
standard library: containers run it as `python3 -m watchdog.emulator` with only the repository on the path.
"""

import sys

from watchdog.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
