"""`python -m watchdog` runs the CLI (same as the `vllm-watchdog` console script)."""

import sys

from watchdog.cli import main

sys.exit(main())
