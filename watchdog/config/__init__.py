"""Configuration: the one schema of `watchdog.yaml` and its loader. Stage: config edge (the base layer).

`models` (the file's top level, targets, probes, notify, remediation, http) with its sections in
`detectors`, `host`, `runtimes`, `receivers` and `routes`; `loader` validates a file once, reporting every
problem as `file:line: field: problem (fix)` through one converter (`problem_from_error`); `yamlsafe` reads
every YAML file the watchdog loads with size, alias and duplicate-key limits; `urls` refuses credentials in
URLs and headers; `docs` renders docs/configuration.md from the schema. Nothing here imports a stage or an
adapter: they import their settings from here.
"""

from watchdog.config.loader import load_file, load_text, validate_section
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.config.yamlsafe import parse_yaml, read_capped

__all__ = ["TargetConfig", "WatchdogConfig", "load_file", "load_text", "parse_yaml", "read_capped",
           "validate_section"]
