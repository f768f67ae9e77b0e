"""The `fleet:` config section, as the fleet stage sees it. Stage: fleet (a re-export).

The models live at the config edge (`watchdog.config.fleet`), because the top-level schema holds them and
the base may import no stage; this module keeps the fleet package's own import path. It must never
define a second copy of a setting.
"""

from __future__ import annotations

from watchdog.config.fleet import EtcdSettings, FailureMode, FleetSettings

__all__ = ["EtcdSettings", "FailureMode", "FleetSettings"]
