"""Configuration: models and loader. Stage: config edge (see models.py and loader.py)."""

from watchdog.config.loader import load_file, load_text
from watchdog.config.models import TargetConfig, WatchdogConfig

__all__ = ["TargetConfig", "WatchdogConfig", "load_file", "load_text"]
