"""Fakes shipped with the package, for tests and the demo. Stage: none.

Each fake implements the same Protocol as the real adapter (see `watchdog/protocols.py`). Fakes must
never be selected by the daemon unless the config names them explicitly.
"""

from watchdog.clock import FakeClock

__all__ = ["FakeClock"]
