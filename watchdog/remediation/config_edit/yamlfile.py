"""vLLM YAML `--config` files: find a key (dashed or underscored) and splice a new scalar into it.

Stage: act (part of `watchdog.remediation.config_edit`). The value is spliced at the scalar's exact
position found by ruamel's composer; a ruamel round-trip is the fallback only for anchored/aliased
values; both are checked by re-parsing that nothing but the edited key changed. This module must never
read or write a file itself (it works on text) and never return text that changes another key.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from watchdog.remediation.config_edit.settings import ConfigEditError, RefusalCode, Refuse


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


def yaml_root(text: str, path: Path) -> MappingNode | None:
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


def yaml_lookup(root: MappingNode | None, key: str) -> tuple[ScalarNode, Node] | None:
    if root is None:
        return None
    names = set(_yaml_candidates(key))
    found = None
    for k, v in root.value:
        if k.value in names:
            found = (k, v)  # vLLM splices keys in order: the later spelling wins
    return found


def yaml_scalar_text(path: Path, key: str, value: Node) -> str:
    if not isinstance(value, ScalarNode):
        raise Refuse(RefusalCode.NOT_A_NUMBER, "is a list or mapping, not a single value")
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


def yaml_set(text: str, path: Path, key: str, new_value: str) -> str:
    root = yaml_root(text, path)
    found = yaml_lookup(root, key)
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


__all__ = ["yaml_lookup", "yaml_root", "yaml_scalar_text", "yaml_set"]
