"""Safe YAML reading for every file the watchdog loads (config, policies, log catalog). Stage: config edge.

PyYAML's SafeLoader refuses arbitrary objects but still accepts three hostile or broken inputs: a
huge file (seconds of parsing), an alias bomb (a few hundred bytes whose aliases expand to billions
of nodes once anything walks the tree) and duplicate mapping keys (the last one silently wins). Here
a file over `MAX_BYTES` is refused before it is read, the composed node graph is measured with
aliases expanded (memoised, so the measurement itself is linear) and refused over `MAX_NODES`, and a
key repeated in one mapping is an error at its line. Every refusal is a `ConfigError` with
`file:line: field: problem (fix)`. This module must never construct Python objects beyond plain YAML
types, never walk an alias graph without a bound, and never echo file content in a problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from watchdog.errors import ConfigError, Problem

MAX_BYTES = 1 << 20
"""Largest config, policy or catalog file accepted (1 MiB); real ones are a few KiB."""
MAX_NODES = 100_000
"""Most YAML nodes a document may have once aliases are expanded (an alias bomb has billions)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings/sequences accepted (real files nest under 10; the composer recurses)."""

_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _too_deep(text: str) -> int | None:
    """The line where nesting passes `MAX_DEPTH`, from the event stream (which does not recurse)."""
    depth = 0
    for ev in yaml.parse(text, Loader=_FAST_LOADER):
        if isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return ev.start_mark.line + 1 if ev.start_mark is not None else None
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    """Nodes in the tree under `node` with every alias expanded; stops counting past `limit`."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # a cycle (an alias of an ancestor) counts as over the limit
    total = 1
    if isinstance(node, yaml.MappingNode):
        children: list[yaml.Node] = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    for child in children:
        total += _expanded_size(child, memo, limit)
        if total > limit:
            break
    memo[key] = total
    return total


def _duplicates(node: yaml.Node, file: str, seen: set[int], out: list[Problem]) -> None:
    """Append a problem for every key given twice in one mapping (each node is visited once)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                line = k.start_mark.line + 1
                if k.value in first:
                    out.append(Problem(file, line, str(k.value), f"duplicate key (first at line {first[k.value]})",
                                       "keep one of them: YAML would silently use the last"))
                else:
                    first[k.value] = line
            _duplicates(k, file, seen, out)
            _duplicates(v, file, seen, out)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _duplicates(child, file, seen, out)


def parse_yaml(text: str, file: str, *, field: str = "(yaml)") -> tuple[Any, yaml.Node | None]:
    """(data, node) of one YAML document, or `ConfigError`: too large, not YAML, alias bomb, duplicate key."""
    if len(text) > MAX_BYTES:
        raise ConfigError([Problem(file, None, "(file)", f"is larger than {MAX_BYTES} bytes",
                                   "a watchdog config is a few KiB: split it or remove generated content")])
    loader = yaml.SafeLoader(text)
    try:
        deep_at = _too_deep(text)
        if deep_at is not None:
            raise ConfigError([Problem(file, deep_at, field, f"is nested more than {MAX_DEPTH} levels deep",
                                       "flatten the document")])
        node = loader.get_single_node()
        if node is None:
            return None, None
        if _expanded_size(node, {}, MAX_NODES) > MAX_NODES:
            raise ConfigError([Problem(file, node.start_mark.line + 1, field,
                                       f"expands to more than {MAX_NODES} nodes through aliases",
                                       "remove the nested aliases (&anchor / *alias)")])
        dups: list[Problem] = []
        _duplicates(node, file, set(), dups)
        if dups:
            raise ConfigError(dups)
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([Problem(file, line, field, f"not valid YAML: {problem}",
                                   "fix the syntax at that line")]) from None
    except RecursionError:
        raise ConfigError([Problem(file, None, field, "is nested too deeply",
                                   "flatten the document")]) from None
    finally:
        loader.dispose()
    return data, node


def read_capped(path: Path | str, *, what: str = "(file)", fix: str = "pass --config PATH") -> str:
    """The UTF-8 text of `path`, refused (ConfigError) when missing, unreadable or over `MAX_BYTES`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([Problem(str(p), None, what, "does not exist", fix)]) from None
    except OSError as e:
        raise ConfigError([Problem(str(p), None, what, f"cannot be read: {e.__class__.__name__}",
                                   "check the path and its permissions")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([Problem(str(p), None, what, f"is larger than {MAX_BYTES} bytes",
                                   "a watchdog file is a few KiB: point to the right file")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(p), None, what, "is not UTF-8 text", "save it as UTF-8")]) from None


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "parse_yaml", "read_capped"]
