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
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from watchdog.config.models import WatchdogConfig
from watchdog.config.yamlsafe import parse_yaml, read_capped
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


def _ann_at(loc: Sequence[str | int], root: Any = WatchdogConfig) -> Any:
    """The (unwrapped) annotation of the value at `loc`; a union tag in `loc` picks that member."""
    model: Any = _unwrap(root)
    for part in loc:
        if isinstance(part, int):
            continue
        if typing.get_origin(model) in (typing.Union, types.UnionType):
            tagged = [m for m in typing.get_args(model) if _tag_of(m) == part]
            model = tagged[0] if tagged else None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model


def _model_at(loc: Sequence[str | int], root: Any = WatchdogConfig) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (for 'known keys' hints)."""
    model = _ann_at(loc, root)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _is_tag(shown: Sequence[str | int], part: str, root: Any) -> bool:
    """True when `part` is a discriminated-union tag inserted by pydantic into an error location."""
    ann = _ann_at(shown, root)
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


def _fix_for(kind: str, err: Mapping[str, Any], loc: Loc, shown: list[str | int], root: Any) -> tuple[str, str]:
    """(message, fix) for one pydantic error kind; the message is pydantic's unless a better one exists."""
    msg = str(err.get("msg", "invalid"))
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1], root)
        known = sorted(f.alias or n for n, f in parent.model_fields.items()) if parent else []
        name = str(shown[-1]) if shown else ""
        close = difflib.get_close_matches(name, known, n=1)
        return f"unknown key '{name}'", (f"did you mean '{close[0]}'? " if close else "") + (
            f"known keys: {', '.join(known)}" if known else "remove it")
    if kind == "missing":
        return "is required", "add it"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if kind == "union_tag_not_found":
            return "has no 'type'", f"add type: one of {', '.join(tags)}"
        tag = str(ctx.get("tag", "?"))
        close = difflib.get_close_matches(tag, tags, n=1)
        return f"unknown type '{tag}'", (f"did you mean '{close[0]}'? " if close else "") + \
            f"use one of: {', '.join(tags)}"
    if kind == "value_error":
        return msg.removeprefix("Value error, "), ""
    if kind in _BOUNDS:
        limit = ctx.get(_BOUNDS[kind][1])
        shown_limit = f"{limit:g}" if isinstance(limit, int | float) else str(limit)
        return msg, f"use a number {_BOUNDS[kind][0]} {shown_limit}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return msg, "check the value's type"
    return msg, ""


def problem_from_error(
    err: Mapping[str, Any], file: str, lines: LineMap | None, data: Any, root: Any = WatchdogConfig,
    prefix: Loc = (),
) -> Problem:
    """One pydantic error as a `file:line: field: message (fix)` Problem: THE converter of the project.

    `root` is the model (or annotated union) that was validated; `prefix` is where its data sits in the
    file (e.g. ("notify", "receivers", 0)) so the field path and the line are those of the whole file.
    """
    loc: Loc = tuple(err.get("loc", ()))
    kind = str(err.get("type", ""))
    # drop discriminated-union tags from the displayed path
    shown: list[str | int] = []
    for p in loc:
        if isinstance(p, str) and (not shown or isinstance(shown[-1], str | int)) and _is_tag(shown, p, root):
            continue
        shown.append(p)
    msg, fix = _fix_for(kind, err, loc, shown, root)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        shown.append("type")
        loc = (*loc, "type")
    full: Loc = (*prefix, *loc)
    line = lines.line_for(full)[0] if lines is not None else None
    source = file
    if not prefix and kind != "missing" and not _in_doc(data, loc) and os.environ.get(_env_name(loc)) is not None:
        source, line = f"environment {_env_name(loc)}", None
    return Problem(file=source, line=line, field=_fmt_loc((*prefix, *shown)), message=msg, fix=fix)


def problems_from(exc: ValidationError, file: str, *, root: Any, prefix: Loc = (), lines: LineMap | None = None,
                  data: Any = None) -> list[Problem]:
    """Every error of `exc` through `problem_from_error` (input values are never included)."""
    return [problem_from_error(e, file, lines, data, root, prefix) for e in exc.errors(include_input=False)]


def validate_section(schema: Any, raw: Any, *, file: str = "watchdog.yaml", prefix: Loc = (),
                     lines: LineMap | None = None) -> Any:
    """`raw` validated against `schema` (a model class or an annotated union), or ConfigError whose
    problems carry the path `prefix` + the field (and a line when `lines` is given)."""
    try:
        return TypeAdapter(schema).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, file, root=schema, prefix=prefix, lines=lines, data=raw)) from None


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
    data, node = parse_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top level)", "must be a mapping", "start with 'targets:'")])
    lines = LineMap(node)
    try:
        cfg: WatchdogConfig = WatchdogSettings(**data)
    except ValidationError as e:
        raise ConfigError(problems_from(e, file, root=WatchdogConfig, lines=lines, data=data)) from None
    base = base_dir or Path.cwd()
    _resolve_paths(cfg, base)
    if cfg.config_dir is None:
        cfg.config_dir = base
    return cfg


def load_file(path: Path | str) -> WatchdogConfig:
    """Load a config file; relative paths inside it resolve against its directory."""
    p = Path(path)
    text = read_capped(p)
    return load_text(text, file=str(p), base_dir=p.resolve().parent)


def line_map_of(path: Path | str) -> LineMap:
    """The line map of a config file that already loaded (for problems found after loading)."""
    try:
        _, node = parse_yaml(read_capped(path), str(path))
    except ConfigError:
        return LineMap(None)
    return LineMap(node)


__all__ = [
    "ENV_PREFIX",
    "LineMap",
    "WatchdogSettings",
    "line_map_of",
    "load_file",
    "load_text",
    "problem_from_error",
    "problems_from",
    "validate_section",
]
