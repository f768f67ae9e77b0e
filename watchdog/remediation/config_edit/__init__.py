"""Config edits for `set_config`: change vLLM settings in env files and vLLM YAML `--config` files.

Stage: act (the library behind the `set_config` action; the action wrapper decides *when*).

Operators keep vLLM settings either in an env file read by docker compose (`GPU_MEMORY_UTILIZATION=0.9`,
interpolated into the command line) or in the YAML file given to `vllm serve --config`
(`gpu-memory-utilization: 0.9`; vLLM also accepts `gpu_memory_utilization`). An edit is planned first
(`plan`: before/after per key, or a refusal with a code such as `AT_FLOOR`) and written second
(`apply`: atomic, with a timestamped backup, refusing if the file changed since it was planned).

Edits only touch the bytes of the edited value: every other byte, comment, blank line, quote style and
the order of keys stay as they were (YAML is spliced at the scalar's exact position found by ruamel's
composer and falls back to a ruamel round-trip only for anchored/aliased values; both are checked by
re-parsing that nothing but the edited keys changed).

The package: `settings` (known settings, `Edit`, refusal codes), `compute` (what an edit makes of the
current value), `envfile` and `yamlfile` (find and splice a value in each format), `planning` (`plan`,
`apply`, `read_setting`, `env_for`). Import from `watchdog.remediation.config_edit`.

It must never: write when any edit of a plan is refused, write a value outside the floor/ceiling,
edit a key that looks like a secret, or put any value other than the edited keys' into a message.
"""

from __future__ import annotations

from watchdog.remediation.config_edit.compute import validate_edit
from watchdog.remediation.config_edit.planning import (
    AppliedChange,
    Change,
    ConfigFile,
    Plan,
    PlannedEdit,
    apply,
    env_for,
    plan,
    read_setting,
)
from watchdog.remediation.config_edit.settings import (
    KNOWN_SETTINGS,
    ConfigEditError,
    Edit,
    Format,
    Kind,
    Op,
    RefusalCode,
    SettingSpec,
    setting_spec,
)

__all__ = [
    "KNOWN_SETTINGS",
    "AppliedChange",
    "Change",
    "ConfigEditError",
    "ConfigFile",
    "Edit",
    "Format",
    "Kind",
    "Op",
    "Plan",
    "PlannedEdit",
    "RefusalCode",
    "SettingSpec",
    "apply",
    "env_for",
    "plan",
    "read_setting",
    "setting_spec",
    "validate_edit",
]
