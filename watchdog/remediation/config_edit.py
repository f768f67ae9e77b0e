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

This module must never: write when any edit of a plan is refused, write a value outside the floor/ceiling,
edit a key that looks like a secret, or put any value other than the edited keys' into a message.
"""

from __future__ import annotations

import enum
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from watchdog.adapters.fs import DEFAULT_MAX_BYTES, FsError, atomic_write, read_bytes_limited, sha256_bytes
from watchdog.clock import Clock
from watchdog.errors import ActionError

__all__ = [
    "KNOWN_SETTINGS",
    "AppliedChange",
    "Change",
    "ConfigEditError",
    "ConfigFile",
    "Edit",
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


# ---------------------------------------------------------------------------------------------- settings


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


def _looks_secret(key: str) -> bool:
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


# ---------------------------------------------------------------------------------------------- API types


@dataclass(frozen=True)
class ConfigFile:
    """A file holding vLLM settings and how it is written."""

    path: Path
    format: Format


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


@dataclass(frozen=True)
class Change:
    """What changed for one key: `before` is None when the key was absent (it was added)."""

    key: str
    before: str | None
    after: str
    setting: str = ""
    env_key: str = ""
    file_format: Format = "env"


@dataclass(frozen=True)
class PlannedEdit:
    """The plan for one edit: before/after, or a refusal (`code` and a `reason` naming file and key)."""

    edit: Edit
    key: str
    before: str | None
    after: str | None
    code: RefusalCode | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Plan:
    """The planned edit of one file. `refusal` is None when every edit can be written."""

    file: ConfigFile
    items: tuple[PlannedEdit, ...]
    refusal: str | None
    code: RefusalCode | None
    original_sha256: str
    new_data: bytes = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.refusal is None

    @property
    def changes(self) -> tuple[Change, ...]:
        spec_for = {id(i): setting_spec(i.edit.setting, i.edit.key) for i in self.items}
        return tuple(
            Change(i.key, i.before, i.after, spec_for[id(i)].name, spec_for[id(i)].env_key, self.file.format)
            for i in self.items
            if i.after is not None and i.code is None
        )


@dataclass(frozen=True)
class AppliedChange:
    """A written edit: the file, the backup of its previous content, and each key's before/after."""

    path: Path
    backup_path: Path | None
    changes: tuple[Change, ...]


# ---------------------------------------------------------------------------------------------- numbers

_INT_TEXT = re.compile(r"[+-]?\d+")
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)([kmgKMG])")
_HUMAN_MULT = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}


def _to_decimal(value: object, *, human: bool = False) -> Decimal | None:
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


def _format_number(d: Decimal, kind: Kind) -> str:
    if kind == "int":
        return str(int(d))
    text = format(d.normalize(), "f")
    if "." not in text:
        text += ".0"
    return text


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _to_bool(value: object) -> bool | None:
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


def _edit_problem(edit: Edit) -> tuple[RefusalCode, str] | None:
    if edit.op not in ("set", "step", "scale"):
        return RefusalCode.BAD_EDIT, f"op must be set, step or scale (got {edit.op!r})"
    spec = setting_spec(edit.setting, edit.key)
    if spec.name not in KNOWN_SETTINGS and (_looks_secret(spec.env_key) or _looks_secret(spec.yaml_key)):
        return RefusalCode.BAD_EDIT, "looks like a secret; the watchdog does not edit secrets"
    if edit.floor is not None and edit.ceiling is not None and edit.floor > edit.ceiling:
        return RefusalCode.BAD_BOUNDS, f"floor {edit.floor} is above ceiling {edit.ceiling}"
    if spec.kind == "bool" and edit.op != "set":
        return RefusalCode.BAD_EDIT, "boolean setting: only op 'set' applies"
    if edit.op in ("step", "scale") and _to_decimal(edit.value) is None:
        return RefusalCode.BAD_EDIT, f"{edit.op} needs a number (got {str(edit.value)[:40]!r})"
    if edit.op == "scale" and (d := _to_decimal(edit.value)) is not None and d <= 0:
        return RefusalCode.BAD_EDIT, f"scale factor must be > 0 (got {edit.value})"
    if spec.kind == "bool" and _to_bool(edit.value) is None:
        return RefusalCode.BAD_EDIT, f"value must be true or false (got {str(edit.value)[:40]!r})"
    return None


def validate_edit(edit: Edit) -> str | None:
    """Why `edit` can never be applied, as `CODE: setting: detail` (for `vllm-watchdog check`), or None."""
    problem = _edit_problem(edit)
    return None if problem is None else f"{problem[0]}: {edit.setting}: {problem[1]}"


class _Refuse(Exception):
    def __init__(self, code: RefusalCode, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


def _compute(spec: SettingSpec, edit: Edit, current: str | None) -> str:
    """The new value text for `edit` given the current value text (None: absent). Raises _Refuse."""
    problem = _edit_problem(edit)
    if problem is not None:
        raise _Refuse(*problem)
    if spec.kind == "bool":
        new_b = _to_bool(edit.value)
        assert new_b is not None
        cur_b = _to_bool(current) if current is not None else None
        if cur_b is not None and cur_b == new_b:
            raise _Refuse(RefusalCode.NO_CHANGE, f"is already {current}")
        if current is not None and current.strip() in ("0", "1"):
            return "1" if new_b else "0"
        return "true" if new_b else "false"
    if spec.kind == "str" or (spec.kind == "auto" and edit.op == "set" and _to_decimal(edit.value) is None):
        if edit.op != "set":
            raise _Refuse(RefusalCode.BAD_EDIT, "is not numeric: only op 'set' applies")
        new_s = str(edit.value)
        if current == new_s:
            raise _Refuse(RefusalCode.NO_CHANGE, f"is already {new_s[:40]}")
        return new_s

    source = current
    if source is None:
        if edit.op == "set":
            source = None
        elif edit.default is None:
            raise _Refuse(RefusalCode.MISSING_KEY, "is not in the file and the edit gives no default")
        else:
            source = str(edit.default)
    cur = _to_decimal(source, human=spec.human_readable) if source is not None else None
    if source is not None and cur is None:
        raise _Refuse(RefusalCode.NOT_A_NUMBER, f"current value {source[:40]!r} is not a number")

    kind: Kind = spec.kind
    if kind == "auto":
        if source is not None:
            kind = "int" if _INT_TEXT.fullmatch(source.strip()) else "float"
        else:
            kind = "int" if isinstance(edit.value, int) or _INT_TEXT.fullmatch(str(edit.value).strip()) else "float"

    floor = _to_decimal(edit.floor) if edit.floor is not None else None
    ceiling = _to_decimal(edit.ceiling) if edit.ceiling is not None else None
    if kind == "int":
        floor = floor.to_integral_value(ROUND_CEILING) if floor is not None else None
        ceiling = ceiling.to_integral_value(ROUND_FLOOR) if ceiling is not None else None
        if floor is not None and ceiling is not None and floor > ceiling:
            raise _Refuse(RefusalCode.BAD_BOUNDS,
                          f"no integer between floor {edit.floor} and ceiling {edit.ceiling}")
    amount = _to_decimal(edit.value, human=spec.human_readable)
    if amount is None:
        raise _Refuse(RefusalCode.BAD_EDIT, f"value {str(edit.value)[:40]!r} is not a number")

    if edit.op == "set":
        new = amount
        if kind == "int" and new != new.to_integral_value():
            raise _Refuse(RefusalCode.BAD_EDIT, f"is an integer setting; {edit.value} is not an integer")
        if (floor is not None and new < floor) or (ceiling is not None and new > ceiling):
            bounds = " / ".join(f"{n} {b}" for n, b in (("floor", edit.floor), ("ceiling", edit.ceiling))
                                if b is not None)
            raise _Refuse(RefusalCode.OUT_OF_BOUNDS, f"value {edit.value} is outside {bounds}")
    else:
        assert cur is not None
        if edit.op == "step":
            direction = (amount > 0) - (amount < 0)
            new = cur + amount
        else:
            direction = (amount > 1) - (amount < 1)
            new = cur * amount
        if direction == 0:
            raise _Refuse(RefusalCode.NO_CHANGE, f"{edit.op} by {edit.value} leaves {source} unchanged")
        if direction < 0 and floor is not None and cur <= floor:
            raise _Refuse(RefusalCode.AT_FLOOR, f"is {source}, already at the floor {edit.floor}")
        if direction > 0 and ceiling is not None and cur >= ceiling:
            raise _Refuse(RefusalCode.AT_CEILING, f"is {source}, already at the ceiling {edit.ceiling}")
        if kind == "int":
            new = new.to_integral_value(ROUND_FLOOR if direction < 0 else ROUND_CEILING)
        if floor is not None and new < floor:
            new = floor
        if ceiling is not None and new > ceiling:
            new = ceiling

    if spec.minimum is not None and (new < spec.minimum or (spec.minimum_exclusive and new == spec.minimum)):
        rel = ">" if spec.minimum_exclusive else "≥"
        raise _Refuse(RefusalCode.OUT_OF_RANGE, f"result {new} is out of range (vLLM needs {rel} {spec.minimum}; "
                                                f"set a floor)")
    if spec.maximum is not None and new > spec.maximum:
        raise _Refuse(RefusalCode.OUT_OF_RANGE, f"result {new} is out of range (vLLM needs ≤ {spec.maximum})")
    if cur is not None and new == cur:
        raise _Refuse(RefusalCode.NO_CHANGE, f"is already {source}")
    return _format_number(new, kind)


# ---------------------------------------------------------------------------------------------- env files

_ENV_LINE = re.compile(r"[ \t\ufeff]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*")


@dataclass(frozen=True)
class _Span:
    key: str
    start: int  # offset of the value text (inside quotes, if quoted)
    end: int
    quote: str  # "", '"' or "'"
    value: str  # the value as docker compose reads it
    line: int  # 1-based


def _parse_env(text: str, path: Path) -> list[_Span]:
    """Every assignment in document order; multi-line quoted values are skipped over (never matched)."""
    spans: list[_Span] = []
    pos = 0
    lineno = 0
    n = len(text)
    while pos < n:
        nl = text.find("\n", pos)
        line_end = n if nl < 0 else nl
        lineno += 1
        content_end = line_end - 1 if line_end > pos and text[line_end - 1] == "\r" else line_end
        m = _ENV_LINE.match(text, pos, content_end)
        next_pos = line_end + 1
        if m is not None:
            vstart = m.end()
            first = text[vstart] if vstart < content_end else ""
            if first in ("'", '"'):
                close = _find_close(text, vstart + 1, first)
                if close < 0:
                    raise ConfigEditError(f"{path}:{lineno}: {m.group(1)}: unterminated {first} quote",
                                          code="MALFORMED")
                raw = text[vstart + 1 : close]
                value = _unescape(raw) if first == '"' else raw
                spans.append(_Span(m.group(1), vstart + 1, close, first, value, lineno))
                if "\n" in raw:  # multi-line value: continue after the line holding the closing quote
                    lineno += raw.count("\n")
                    nl2 = text.find("\n", close)
                    next_pos = n if nl2 < 0 else nl2 + 1
            else:
                rest = text[vstart:content_end]
                cm = re.search(r"[ \t]+#", rest)
                raw = rest[: cm.start()] if cm else rest
                raw = raw.rstrip(" \t")
                spans.append(_Span(m.group(1), vstart, vstart + len(raw), "", raw, lineno))
        pos = next_pos
    return spans


def _find_close(text: str, start: int, quote: str) -> int:
    i = start
    while i < len(text):
        c = text[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            return i
        i += 1
    return -1


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw, flags=re.S)


def _env_lookup(spans: list[_Span], key: str) -> _Span | None:
    found = None
    for s in spans:
        if s.key == key:
            found = s  # duplicate keys: the last one wins, as in docker compose
    return found


def _env_set(text: str, path: Path, key: str, new_value: str) -> str:
    span = _env_lookup(_parse_env(text, path), key)
    if span is None:
        eol = "\r\n" if "\r\n" in text else "\n"
        sep = "" if not text or text.endswith("\n") else eol
        return f"{text}{sep}{key}={_env_quote(new_value, '')}{eol}"
    return text[: span.start] + _env_quote(new_value, span.quote) + text[span.end :]


def _env_quote(value: str, quote: str) -> str:
    if quote == '"':
        return value.replace("\\", "\\\\").replace('"', '\\"')
    if quote == "'":
        if "'" in value:
            raise ConfigEditError("value contains a single quote and the file quotes it with single quotes",
                                  code="BAD_VALUE")
        return value
    if re.search(r"[\s#'\"\\$]", value):
        raise ConfigEditError(f"value {value[:40]!r} would need quoting; quote the key in the file first",
                              code="BAD_VALUE")
    return value


# ---------------------------------------------------------------------------------------------- YAML files


def _yaml_rt() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    return y


def _yaml_error(path: Path, e: YAMLError) -> ConfigEditError:
    if isinstance(e, MarkedYAMLError) and e.problem_mark is not None:
        where = f"{path}:{e.problem_mark.line + 1}"
        return ConfigEditError(f"{where}: malformed YAML: {e.problem} (fix the file by hand)", code="MALFORMED")
    return ConfigEditError(f"{path}: malformed YAML: {e.__class__.__name__} (fix the file by hand)",
                           code="MALFORMED")


def _yaml_root(text: str, path: Path) -> MappingNode | None:
    try:
        node = _yaml_rt().compose(text)
    except YAMLError as e:
        raise _yaml_error(path, e) from e
    if node is None:
        return None
    if not isinstance(node, MappingNode):
        raise ConfigEditError(f"{path}: the YAML config must be a mapping of `key: value` (vLLM --config)",
                              code="MALFORMED")
    seen: dict[str, int] = {}
    for k, _v in node.value:
        if not isinstance(k, ScalarNode):
            raise ConfigEditError(f"{path}:{k.start_mark.line + 1}: complex mapping key", code="MALFORMED")
        if k.value in seen:
            raise ConfigEditError(f"{path}: duplicate key {k.value!r} at lines {seen[k.value]} and "
                                  f"{k.start_mark.line + 1} (remove one)", code="MALFORMED")
        seen[k.value] = k.start_mark.line + 1
    return node


def _yaml_candidates(key: str) -> list[str]:
    out = [key]
    for alt in (key.replace("_", "-"), key.replace("-", "_")):
        if alt not in out:
            out.append(alt)
    return out


def _yaml_lookup(root: MappingNode | None, key: str) -> tuple[ScalarNode, Node] | None:
    if root is None:
        return None
    names = set(_yaml_candidates(key))
    found = None
    for k, v in root.value:
        if k.value in names:
            found = (k, v)  # vLLM splices keys in order: the later spelling wins
    return found


def _yaml_scalar_text(path: Path, key: str, value: Node) -> str:
    if not isinstance(value, ScalarNode):
        raise _Refuse(RefusalCode.NOT_A_NUMBER, "is a list or mapping, not a single value")
    return str(value.value)


_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_./@+-][A-Za-z0-9_./@+:-]*")


def _yaml_scalar(new_value: str, style: str | None) -> str:
    if style == '"':
        return '"' + new_value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if style == "'":
        return "'" + new_value.replace("'", "''") + "'"
    if _PLAIN_SAFE.fullmatch(new_value):
        return new_value
    return '"' + new_value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yaml_load_plain(text: str, path: Path) -> dict[str, Any]:
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        raise _yaml_error(path, e) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigEditError(f"{path}: the YAML config must be a mapping", code="MALFORMED")
    return data


def _yaml_set(text: str, path: Path, key: str, new_value: str) -> str:
    root = _yaml_root(text, path)
    found = _yaml_lookup(root, key)
    before = _yaml_load_plain(text, path)
    expected_value = _yaml_load_plain(f"v: {_yaml_scalar(new_value, None)}\n", path)["v"]
    candidates: list[str] = []
    if found is None:
        indent = root.value[0][0].start_mark.column if root is not None and root.value else 0
        if root is None or root.flow_style is not True:
            eol = "\r\n" if "\r\n" in text else "\n"
            sep = "" if not text or text.endswith("\n") else eol
            candidates.append(f"{text}{sep}{' ' * indent}{key}: {_yaml_scalar(new_value, None)}{eol}")
        expected_key = key
    else:
        k, v = found
        expected_key = str(k.value)
        if isinstance(v, ScalarNode) and v.style in (None, '"', "'") and v.start_mark.index > k.end_mark.index:
            span = text[v.start_mark.index : v.end_mark.index]
            if span[:1] not in ("&", "!", "*") and "\n" not in span:
                scalar = _yaml_scalar(new_value, v.style)
                expected_value = _yaml_load_plain(f"v: {scalar}\n", path)["v"]
                candidates.append(text[: v.start_mark.index] + scalar + text[v.end_mark.index :])
    expected = dict(before)
    expected[expected_key] = expected_value
    candidates.append(_yaml_roundtrip_set(text, path, expected_key, new_value))
    for cand in candidates:
        try:
            after = _yaml_load_plain(cand, path)
        except ConfigEditError:
            continue
        if after == expected and list(after) == list(expected):
            return cand
    raise ConfigEditError(f"{path}: {key}: cannot write the new value without changing other keys "
                          f"(edit the file by hand)", code="UNSAFE_EDIT")


def _yaml_roundtrip_set(text: str, path: Path, key: str, new_value: str) -> str:
    y = _yaml_rt()
    try:
        data = y.load(text)
    except YAMLError as e:
        raise _yaml_error(path, e) from e
    if data is None:
        data = {}
    data[key] = _yaml_load_plain(f"v: {_yaml_scalar(new_value, None)}\n", path)["v"]
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- plan/apply


def _decode(data: bytes, file: ConfigFile) -> str:
    if file.format == "env":
        return data.decode("utf-8", "surrogateescape")  # keeps every byte, even invalid UTF-8
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigEditError(f"{file.path}: not valid UTF-8 (byte offset {e.start})", code="MALFORMED") from e


def _encode(text: str, file: ConfigFile) -> bytes:
    return text.encode("utf-8", "surrogateescape" if file.format == "env" else "strict")


def _read(file: ConfigFile, max_bytes: int) -> bytes:
    if file.format not in ("env", "yaml"):
        raise ConfigEditError(f"{file.path}: unknown config format {file.format!r} (use env or yaml)",
                              code="BAD_FORMAT")
    try:
        return read_bytes_limited(file.path, max_bytes)
    except FsError as e:
        raise ConfigEditError(str(e), code="UNREADABLE") from e


def _file_key(file: ConfigFile, spec: SettingSpec) -> str:
    return spec.env_key if file.format == "env" else spec.yaml_key


def _current(text: str, file: ConfigFile, spec: SettingSpec) -> tuple[str, str | None]:
    """(the key as spelled in the file, its current value text or None when absent)."""
    key = _file_key(file, spec)
    if file.format == "env":
        span = _env_lookup(_parse_env(text, file.path), key)
        return key, (span.value if span is not None else None)
    found = _yaml_lookup(_yaml_root(text, file.path), key)
    if found is None:
        return key, None
    return str(found[0].value), _yaml_scalar_text(file.path, key, found[1])


def read_setting(file: ConfigFile, setting: str, key: str | None = None,
                 *, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """The effective value text of `setting` in `file` (last occurrence), or None when absent."""
    data = _read(file, max_bytes)
    text = _decode(data, file)
    spec = setting_spec(setting, key)
    try:
        return _current(text, file, spec)[1]
    except _Refuse as r:
        raise ConfigEditError(f"{file.path}: {_file_key(file, spec)}: {r.detail}", code=r.code) from r


def plan(file: ConfigFile, edits: Sequence[Edit], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Plan:
    """Plan `edits` on `file`: before/after for each, or a refusal. Writes nothing.

    All or nothing: when any edit is refused, `Plan.refusal` says why (each refused edit as
    `CODE: setting (KEY) in FILE: detail`) and `apply` will not write. Raises ConfigEditError when the
    file itself cannot be read or parsed (the message names the file, the line and the key).
    """
    data = _read(file, max_bytes)
    text = _decode(data, file)
    items: list[PlannedEdit] = []
    seen: set[str] = set()
    for edit in edits:
        spec = setting_spec(edit.setting, edit.key)
        key = _file_key(file, spec)
        where = f"{spec.name} ({key}) in {file.path}"
        before: str | None = None
        try:
            key, before = _current(text, file, spec)
            where = f"{spec.name} ({key}) in {file.path}"
            if spec.name in seen:
                raise _Refuse(RefusalCode.BAD_EDIT, "is edited twice in one step")
            seen.add(spec.name)
            after = _compute(spec, edit, before)
        except _Refuse as r:
            items.append(PlannedEdit(edit, key, before, None, r.code, f"{r.code}: {where}: {r.detail}"))
            continue
        try:
            text = _env_set(text, file.path, key, after) if file.format == "env" else \
                _yaml_set(text, file.path, key, after)
        except ConfigEditError as e:
            raise ConfigEditError(f"{file.path}: {key}: {e}", code=e.code) from e
        items.append(PlannedEdit(edit, key, before, after))
    refused = [i for i in items if i.code is not None]
    new_data = _encode(text, file)
    if refused:
        return Plan(file, tuple(items), "; ".join(str(i.reason) for i in refused), refused[0].code,
                    sha256_bytes(data), data)
    if not items:
        return Plan(file, (), f"{RefusalCode.NO_CHANGE}: no edits given for {file.path}", RefusalCode.NO_CHANGE,
                    sha256_bytes(data), data)
    _verify(file, new_data, items)
    return Plan(file, tuple(items), None, None, sha256_bytes(data), new_data)


def _verify(file: ConfigFile, new_data: bytes, items: Sequence[PlannedEdit]) -> None:
    """Re-read the planned bytes: every edited setting must read back as its planned value."""
    text = _decode(new_data, file)
    for i in items:
        got = _current(text, file, setting_spec(i.edit.setting, i.edit.key))[1]
        if got != i.after:
            raise ConfigEditError(f"{file.path}: {i.key}: the edit does not read back as {i.after!r} "
                                  f"(edit the file by hand)", code="UNSAFE_EDIT")


def apply(p: Plan, *, backup_dir: Path | None, clock: Clock, max_bytes: int = DEFAULT_MAX_BYTES) -> AppliedChange:
    """Write a plan atomically, after a timestamped backup of the current content.

    Refuses (ConfigEditError, nothing written) when the plan was refused or when the file changed
    since it was planned (re-plan then).
    """
    if p.refusal is not None:
        raise ConfigEditError(f"not writing {p.file.path}: {p.refusal}", code=str(p.code or "REFUSED"))
    current = _read(p.file, max_bytes)
    if sha256_bytes(current) != p.original_sha256:
        raise ConfigEditError(f"{p.file.path}: changed since the edit was planned (plan again)", code="CHANGED")
    try:
        backup = atomic_write(p.file.path, p.new_data, backup_dir=backup_dir, clock=clock)
    except FsError as e:
        raise ConfigEditError(str(e), code="WRITE_FAILED") from e
    if _read(p.file, max_bytes) != p.new_data:
        raise ConfigEditError(f"{p.file.path}: the written file does not read back as planned "
                              f"(backup: {backup})", code="WRITE_FAILED")
    return AppliedChange(p.file.path, backup, p.changes)


def env_for(changes: Sequence[Change]) -> dict[str, str]:
    """`{ENV_VAR: new value}` for the changes made in env files (what a re-created container must get).

    Changes made in YAML files are left out: the server reads those from the file itself.
    """
    return {c.key: c.after for c in changes if c.file_format == "env"}
