"""The vocabulary of a config edit: known vLLM settings, the `Edit` asked for, refusal codes, errors.

Stage: act (part of `watchdog.remediation.config_edit`, the library behind `set_config`). This module
must never touch a file; it names settings and says what an edit means.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from watchdog.errors import ActionError

Format = Literal["env", "yaml"]
Op = Literal["set", "step", "scale"]
Kind = Literal["float", "int", "bool", "str", "auto"]


class RefusalCode(enum.StrEnum):
    """Why a planned edit will not be written (stable strings: they appear in the ledger and in tests)."""

    AT_FLOOR = "AT_FLOOR"  # lowering, but the current value is already at (or under) the floor
    AT_CEILING = "AT_CEILING"  # raising, but the current value is already at (or over) the ceiling
    MISSING_KEY = "MISSING_KEY"  # step/scale on a key the file does not have, and no default given
    NOT_A_NUMBER = "NOT_A_NUMBER"  # the current value in the file is not a number
    BAD_BOUNDS = "BAD_BOUNDS"  # floor > ceiling
    OUT_OF_BOUNDS = "OUT_OF_BOUNDS"  # `set` to a value outside [floor, ceiling]
    OUT_OF_RANGE = "OUT_OF_RANGE"  # the result is outside what vLLM accepts (e.g. utilization ≤ 0)
    NO_CHANGE = "NO_CHANGE"  # the result equals the current value: nothing to do
    BAD_EDIT = "BAD_EDIT"  # the edit itself is invalid (unknown op, non-numeric delta, secret key, ...)


class ConfigEditError(ActionError):
    """The file cannot be edited at all (unreadable, malformed, changed since planned). Nothing was written."""

    def __init__(self, message: str, *, code: str = "ERROR") -> None:
        self.code = code
        super().__init__(message)


class Refuse(Exception):
    """One edit is refused (the plan records it; nothing is written). `code` and `detail` say why."""

    def __init__(self, code: RefusalCode, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its canonical name, its env-file and YAML key, its type and vLLM's hard limits."""

    name: str
    env_key: str
    yaml_key: str
    kind: Kind
    minimum: Decimal | None = None
    minimum_exclusive: bool = False
    maximum: Decimal | None = None
    human_readable: bool = False  # vLLM accepts `32k` (×1000) / `32K` (×1024) for this setting


KNOWN_SETTINGS: Mapping[str, SettingSpec] = {
    s.name: s
    for s in (
        SettingSpec("gpu_memory_utilization", "GPU_MEMORY_UTILIZATION", "gpu-memory-utilization", "float",
                    minimum=Decimal(0), minimum_exclusive=True, maximum=Decimal(1)),
        SettingSpec("max_num_seqs", "MAX_NUM_SEQS", "max-num-seqs", "int", minimum=Decimal(1)),
        SettingSpec("max_num_batched_tokens", "MAX_NUM_BATCHED_TOKENS", "max-num-batched-tokens", "int",
                    minimum=Decimal(1)),
        SettingSpec("max_model_len", "MAX_MODEL_LEN", "max-model-len", "int", minimum=Decimal(1),
                    human_readable=True),
        SettingSpec("enforce_eager", "ENFORCE_EAGER", "enforce-eager", "bool"),
        SettingSpec("tensor_parallel_size", "TENSOR_PARALLEL_SIZE", "tensor-parallel-size", "int",
                    minimum=Decimal(1)),
    )
}

_SECRET_WORDS = {"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASS", "CREDENTIALS", "CREDENTIAL", "APIKEY",
                 "AUTH", "COOKIE", "PRIVATE"}


def looks_secret(key: str) -> bool:
    return any(part in _SECRET_WORDS for part in re.split(r"[-_.]", key.upper()))


def setting_spec(setting: str, key: str | None = None) -> SettingSpec:
    """The spec for `setting`; `key` (if given) is the literal key to use in the file (env or YAML).

    Unknown settings derive their keys: env `UPPER_SNAKE`, YAML `dashed-lower`; their type is inferred
    from the value in the file.
    """
    canonical = setting.strip().replace("-", "_").lower()
    known = KNOWN_SETTINGS.get(canonical)
    if key is not None:
        base = known or SettingSpec(canonical, key, key, "auto")
        return SettingSpec(base.name, key, key, base.kind, base.minimum, base.minimum_exclusive, base.maximum,
                           base.human_readable)
    if known is not None:
        return known
    return SettingSpec(canonical, canonical.upper(), canonical.replace("_", "-"), "auto")


@dataclass(frozen=True)
class Edit:
    """One change: `set` to `value`, `step` by `value` (e.g. -0.05), or `scale` by `value` (e.g. 0.5).

    `floor`/`ceiling` bound the result (step/scale clamp to them; `set` outside them is refused). `key`
    names the key literally when the setting is not one of KNOWN_SETTINGS or the file uses another name.
    `default` is the current value to assume when the key is absent (else step/scale refuse MISSING_KEY).
    """

    setting: str
    op: Op
    value: float | int | str
    floor: float | None = None
    ceiling: float | None = None
    key: str | None = None
    default: float | int | str | None = None


__all__ = [
    "KNOWN_SETTINGS",
    "ConfigEditError",
    "Edit",
    "Format",
    "Kind",
    "Op",
    "RefusalCode",
    "Refuse",
    "SettingSpec",
    "looks_secret",
    "setting_spec",
]
