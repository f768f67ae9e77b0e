"""Load and validate `watchdog.yaml` (+ `VLLM_WATCHDOG_…` environment overrides). Stage: config edge.

Every problem is reported at once as `file:line: field: what is wrong (what would be right)`. This
module must never print a secret (inputs are hidden from pydantic errors) and never partially apply a
config: it returns a whole valid `WatchdogConfig` or raises `ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from watchdog.config.models import WatchdogConfig
from watchdog.errors import ConfigError, Problem

ENV_PREFIX = "VLLM_WATCHDOG_"

Loc = tuple[str | int, ...]


class LineMap:
    """Maps a path of keys/indexes in a YAML document to the line it starts on (1-based)."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.lines: dict[Loc, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: Loc) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                self.lines[(*path, key)] = k.start_mark.line + 1
                self._walk(v, (*path, key))
                self.lines[(*path, key)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*path, i))

    def line_for(self, loc: Sequence[str | int]) -> tuple[int | None, Loc]:
        """Best line for a pydantic loc; skips loc parts that are not in the document (union tags)."""
        path: Loc = ()
        best = self.lines.get((), None)
        for part in loc:
            cand = (*path, part)
            if cand in self.lines:
                path = cand
                best = self.lines[cand]
        return best, path


def _fmt_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


def _model_at(loc: Sequence[str | int], root: type[BaseModel] = WatchdogConfig) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (for 'known keys' hints)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if typing.get_origin(model) in (typing.Union, types.UnionType):
            # a discriminated-union tag in the loc ('docker'): the member whose `type` is that tag
            tagged = [m for m in typing.get_args(model) if _tag_of(m) == part]
            model = tagged[0] if tagged else None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _is_tag(shown: Sequence[str | int], part: str, root: type[BaseModel]) -> bool:
    """True when `part` is a discriminated-union tag inserted by pydantic into an error location."""
    parent = _model_at(shown[:-1], root)
    if parent is None:
        return False
    field = parent.model_fields.get(str(shown[-1]))
    if field is None:
        return False
    ann = _unwrap(field.annotation)
    return typing.get_origin(ann) in (typing.Union, types.UnionType) and any(
        _tag_of(m) == part for m in typing.get_args(ann)
    )


def _tag_of(model: Any) -> str | None:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        args = typing.get_args(model.model_fields["type"].annotation)
        return str(args[0]) if args else None
    return None


def _unwrap(ann: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (list, tuple, Sequence):
        return _unwrap(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(ann) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else ann
    return ann


def _env_name(loc: Sequence[str | int]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc if isinstance(p, str))


def _in_doc(data: Any, loc: Sequence[str | int]) -> bool:
    cur = data
    for p in loc:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            return False
    return True


_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}


def problem_from_error(
    err: Mapping[str, Any], file: str, lines: LineMap, data: Any, root: type[BaseModel] = WatchdogConfig
) -> Problem:
    """One pydantic error as a `file:line: field: message (fix)` Problem."""
    loc: Loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    fix = ""
    # drop discriminated-union tags from the displayed path
    shown: list[str | int] = []
    for p in loc:
        if shown and isinstance(p, str) and isinstance(shown[-1], str) and _is_tag(shown, p, root):
            continue
        shown.append(p)
    line, _ = lines.line_for(loc)
    source = file
    if kind != "missing" and not _in_doc(data, loc) and os.environ.get(_env_name(loc)) is not None:
        source, line = f"environment {_env_name(loc)}", None
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1], root)
        known = sorted(parent.model_fields) if parent else []
        name = str(shown[-1]) if shown else ""
        close = difflib.get_close_matches(name, known, n=1)
        msg = f"unknown key '{name}'"
        fix = (f"did you mean '{close[0]}'? " if close else "") + (
            f"known keys: {', '.join(known)}" if known else "remove it"
        )
    elif kind == "missing":
        msg = "is required"
        fix = "add it"
    elif kind == "union_tag_invalid":
        fix = "use one of: docker, systemd, process"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind in _BOUNDS:
        limit = (err.get("ctx") or {}).get(_BOUNDS[kind][1])
        shown_limit = f"{limit:g}" if isinstance(limit, int | float) else str(limit)
        fix = f"use a number {_BOUNDS[kind][0]} {shown_limit}"
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        fix = "check the value's type"
    return Problem(file=source, line=line, field=_fmt_loc(shown), message=msg, fix=fix)


class WatchdogSettings(BaseSettings, WatchdogConfig):
    """`WatchdogConfig` as pydantic-settings: `VLLM_WATCHDOG_A__B=v` overrides `a.b` from the YAML file.

    Environment beats the file; nested models are deep-merged, so an override changes one key only.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
        populate_by_name=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def _resolve_paths(obj: Any, base: Path) -> None:
    """Make every relative Path in the config relative to the config file's directory."""
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            val = getattr(obj, name)
            if isinstance(val, Path) and not val.is_absolute():
                object.__setattr__(obj, name, (base / val))
            else:
                _resolve_paths(val, base)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, Path) and not v.is_absolute():
                obj[i] = base / v
            else:
                _resolve_paths(v, base)


def load_text(text: str, *, file: str = "<config>", base_dir: Path | None = None) -> WatchdogConfig:
    """Parse and validate config text. Raises ConfigError listing every problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            [Problem(file, line, "(yaml)", f"not valid YAML: {problem}", "fix the syntax at that line")]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top level)", "must be a mapping", "start with 'targets:'")])
    lines = LineMap(node)
    try:
        cfg: WatchdogConfig = WatchdogSettings(**data)
    except ValidationError as e:
        problems = [problem_from_error(err, file, lines, data) for err in e.errors(include_input=False)]
        raise ConfigError(problems) from None
    base = base_dir or Path.cwd()
    _resolve_paths(cfg, base)
    if cfg.config_dir is None:
        cfg.config_dir = base
    return cfg


def load_file(path: Path | str) -> WatchdogConfig:
    """Load a config file; relative paths inside it resolve against its directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(p), None, "(file)", "does not exist", "pass --config PATH")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(str(p), None, "(file)", f"cannot be read: {e.__class__.__name__}", "")]) from None
    return load_text(text, file=str(p), base_dir=p.resolve().parent)


__all__ = ["ENV_PREFIX", "LineMap", "WatchdogSettings", "load_file", "load_text", "problem_from_error"]
