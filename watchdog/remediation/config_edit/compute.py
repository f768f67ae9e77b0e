"""What an edit makes of a setting's current value: the new value text, or a refusal with a code.

Stage: act (part of `watchdog.remediation.config_edit`). Numbers are Decimals (0.05 stays 0.05), ints
round towards the floor when lowering and towards the ceiling when raising, results are clamped to the
edit's floor/ceiling and checked against vLLM's own limits. This module must never touch a file and
never return a value outside the edit's floor/ceiling.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

from watchdog.remediation.config_edit.settings import (
    KNOWN_SETTINGS,
    Edit,
    Kind,
    RefusalCode,
    Refuse,
    SettingSpec,
    looks_secret,
    setting_spec,
)

_INT_TEXT = re.compile(r"[+-]?\d+")
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)([kmgKMG])")
_HUMAN_MULT = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}


def to_decimal(value: object, *, human: bool = False) -> Decimal | None:
    """A finite Decimal from an int/float/str, or None. Floats go through repr (0.05 stays 0.05)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    if human and (m := _HUMAN.fullmatch(text)):
        if m.group(2).isupper() and "." in m.group(1):
            return None
        return Decimal(m.group(1)) * _HUMAN_MULT[m.group(2)]
    try:
        d = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def format_number(d: Decimal, kind: Kind) -> str:
    if kind == "int":
        return str(int(d))
    text = format(d.normalize(), "f")
    if "." not in text:
        text += ".0"
    return text


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def to_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    return None


def edit_problem(edit: Edit) -> tuple[RefusalCode, str] | None:
    if edit.op not in ("set", "step", "scale"):
        return RefusalCode.BAD_EDIT, f"op must be set, step or scale (got {edit.op!r})"
    spec = setting_spec(edit.setting, edit.key)
    if spec.name not in KNOWN_SETTINGS and (looks_secret(spec.env_key) or looks_secret(spec.yaml_key)):
        return RefusalCode.BAD_EDIT, "looks like a secret; the watchdog does not edit secrets"
    if edit.floor is not None and edit.ceiling is not None and edit.floor > edit.ceiling:
        return RefusalCode.BAD_BOUNDS, f"floor {edit.floor} is above ceiling {edit.ceiling}"
    if spec.kind == "bool" and edit.op != "set":
        return RefusalCode.BAD_EDIT, "boolean setting: only op 'set' applies"
    if edit.op in ("step", "scale") and to_decimal(edit.value) is None:
        return RefusalCode.BAD_EDIT, f"{edit.op} needs a number (got {str(edit.value)[:40]!r})"
    if edit.op == "scale" and (d := to_decimal(edit.value)) is not None and d <= 0:
        return RefusalCode.BAD_EDIT, f"scale factor must be > 0 (got {edit.value})"
    if spec.kind == "bool" and to_bool(edit.value) is None:
        return RefusalCode.BAD_EDIT, f"value must be true or false (got {str(edit.value)[:40]!r})"
    return None


def validate_edit(edit: Edit) -> str | None:
    """Why `edit` can never be applied, as `CODE: setting: detail` (for `vllm-watchdog check`), or None."""
    problem = edit_problem(edit)
    return None if problem is None else f"{problem[0]}: {edit.setting}: {problem[1]}"


def compute(spec: SettingSpec, edit: Edit, current: str | None) -> str:
    """The new value text for `edit` given the current value text (None: absent). Raises Refuse."""
    problem = edit_problem(edit)
    if problem is not None:
        raise Refuse(*problem)
    if spec.kind == "bool":
        return _compute_bool(edit, current)
    if spec.kind == "str" or (spec.kind == "auto" and edit.op == "set" and to_decimal(edit.value) is None):
        return _compute_str(edit, current)
    source, cur = _current_number(spec, edit, current)
    kind = _number_kind(spec, edit, source)
    floor, ceiling = _bounds(edit, kind)
    amount = to_decimal(edit.value, human=spec.human_readable)
    if amount is None:
        raise Refuse(RefusalCode.BAD_EDIT, f"value {str(edit.value)[:40]!r} is not a number")
    if edit.op == "set":
        new = _set(edit, amount, kind, floor, ceiling)
    else:
        assert cur is not None and source is not None
        new = _step_or_scale(edit, amount, kind, cur, source, floor, ceiling)
    _check_vllm_range(spec, new)
    if cur is not None and new == cur:
        raise Refuse(RefusalCode.NO_CHANGE, f"is already {source}")
    return format_number(new, kind)


def _compute_bool(edit: Edit, current: str | None) -> str:
    """A boolean keeps the file's spelling: `0`/`1` when the file has it so, else `true`/`false`."""
    new_b = to_bool(edit.value)
    assert new_b is not None
    cur_b = to_bool(current) if current is not None else None
    if cur_b is not None and cur_b == new_b:
        raise Refuse(RefusalCode.NO_CHANGE, f"is already {current}")
    if current is not None and current.strip() in ("0", "1"):
        return "1" if new_b else "0"
    return "true" if new_b else "false"


def _compute_str(edit: Edit, current: str | None) -> str:
    if edit.op != "set":
        raise Refuse(RefusalCode.BAD_EDIT, "is not numeric: only op 'set' applies")
    new_s = str(edit.value)
    if current == new_s:
        raise Refuse(RefusalCode.NO_CHANGE, f"is already {new_s[:40]}")
    return new_s


def _current_number(spec: SettingSpec, edit: Edit, current: str | None) -> tuple[str | None, Decimal | None]:
    """(the value text step/scale start from, as a number): the file's value, else the edit's default;
    (None, None) for a `set` on an absent key."""
    source = current
    if source is None:
        if edit.op == "set":
            source = None
        elif edit.default is None:
            raise Refuse(RefusalCode.MISSING_KEY, "is not in the file and the edit gives no default")
        else:
            source = str(edit.default)
    cur = to_decimal(source, human=spec.human_readable) if source is not None else None
    if source is not None and cur is None:
        raise Refuse(RefusalCode.NOT_A_NUMBER, f"current value {source[:40]!r} is not a number")
    return source, cur


def _number_kind(spec: SettingSpec, edit: Edit, source: str | None) -> Kind:
    """int or float: the spec's kind, else what the file's value (or the new value) looks like."""
    if spec.kind != "auto":
        return spec.kind
    if source is not None:
        return "int" if _INT_TEXT.fullmatch(source.strip()) else "float"
    return "int" if isinstance(edit.value, int) or _INT_TEXT.fullmatch(str(edit.value).strip()) else "float"


def _bounds(edit: Edit, kind: Kind) -> tuple[Decimal | None, Decimal | None]:
    """The edit's floor and ceiling as numbers (for an int setting: the integers inside them)."""
    floor = to_decimal(edit.floor) if edit.floor is not None else None
    ceiling = to_decimal(edit.ceiling) if edit.ceiling is not None else None
    if kind == "int":
        floor = floor.to_integral_value(ROUND_CEILING) if floor is not None else None
        ceiling = ceiling.to_integral_value(ROUND_FLOOR) if ceiling is not None else None
        if floor is not None and ceiling is not None and floor > ceiling:
            raise Refuse(RefusalCode.BAD_BOUNDS,
                         f"no integer between floor {edit.floor} and ceiling {edit.ceiling}")
    return floor, ceiling


def _set(edit: Edit, amount: Decimal, kind: Kind, floor: Decimal | None, ceiling: Decimal | None) -> Decimal:
    """`set`: the value itself, refused (never clamped) outside the floor/ceiling."""
    if kind == "int" and amount != amount.to_integral_value():
        raise Refuse(RefusalCode.BAD_EDIT, f"is an integer setting; {edit.value} is not an integer")
    if (floor is not None and amount < floor) or (ceiling is not None and amount > ceiling):
        bounds = " / ".join(f"{n} {b}" for n, b in (("floor", edit.floor), ("ceiling", edit.ceiling))
                            if b is not None)
        raise Refuse(RefusalCode.OUT_OF_BOUNDS, f"value {edit.value} is outside {bounds}")
    return amount


def _step_or_scale(edit: Edit, amount: Decimal, kind: Kind, cur: Decimal, source: str,
                   floor: Decimal | None, ceiling: Decimal | None) -> Decimal:
    """`step`/`scale`: refused when it moves nothing or the value already sits at the bound it moves
    towards; ints round away from the current value; the result is clamped to the floor/ceiling."""
    if edit.op == "step":
        direction = (amount > 0) - (amount < 0)
        new = cur + amount
    else:
        direction = (amount > 1) - (amount < 1)
        new = cur * amount
    if direction == 0:
        raise Refuse(RefusalCode.NO_CHANGE, f"{edit.op} by {edit.value} leaves {source} unchanged")
    if direction < 0 and floor is not None and cur <= floor:
        raise Refuse(RefusalCode.AT_FLOOR, f"is {source}, already at the floor {edit.floor}")
    if direction > 0 and ceiling is not None and cur >= ceiling:
        raise Refuse(RefusalCode.AT_CEILING, f"is {source}, already at the ceiling {edit.ceiling}")
    if kind == "int":
        new = new.to_integral_value(ROUND_FLOOR if direction < 0 else ROUND_CEILING)
    if floor is not None and new < floor:
        new = floor
    if ceiling is not None and new > ceiling:
        new = ceiling
    return new


def _check_vllm_range(spec: SettingSpec, new: Decimal) -> None:
    if spec.minimum is not None and (new < spec.minimum or (spec.minimum_exclusive and new == spec.minimum)):
        rel = ">" if spec.minimum_exclusive else "≥"
        raise Refuse(RefusalCode.OUT_OF_RANGE, f"result {new} is out of range (vLLM needs {rel} {spec.minimum}; "
                                               f"set a floor)")
    if spec.maximum is not None and new > spec.maximum:
        raise Refuse(RefusalCode.OUT_OF_RANGE, f"result {new} is out of range (vLLM needs ≤ {spec.maximum})")


__all__ = ["compute", "edit_problem", "format_number", "to_bool", "to_decimal", "validate_edit"]
