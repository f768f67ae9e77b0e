"""The configuration reference, generated from the one schema: `python -m watchdog.config.docs >
docs/configuration.md` (`make docs`). Stage: config edge (a documentation tool).

Every key of `WatchdogConfig`, walked section by section (each runtime and receiver `type` is its own
section), with its type, default, unit (from the key's suffix), meaning (the field's description) and
an example; then the table of incident kinds (severity, source and operator action from
`watchdog.config.kinds`, default policy from the shipped policy file). A test regenerates this text and
fails when docs/configuration.md differs or a field has no description. This module must never import
a stage and never write a file itself (it prints).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from watchdog.config.kinds import KIND_DOCS
from watchdog.config.loader import ENV_PREFIX
from watchdog.config.models import WatchdogConfig
from watchdog.config.yamlsafe import parse_yaml, read_capped
from watchdog.model import IncidentKind

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY_CANDIDATES = (REPO_ROOT / "policies" / "default.yaml", REPO_ROOT / "watchdog" / "data" / "default_policy.yaml")

_UNITS = (("_ms", "milliseconds"), ("_s", "seconds"), ("_bytes", "bytes"), ("_percent", "percent (0–100)"),
          ("_days", "days"), ("_c", "°C"), ("_rps", "requests/second"), ("_per_s", "per second"))


@dataclass(frozen=True, slots=True)
class Section:
    """One model documented at one path of the file."""

    path: str
    model: type[BaseModel]
    tag: str | None = None


def _unwrap(ann: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(ann) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else ann
    return ann


def _models_in(ann: Any) -> list[tuple[str, type[BaseModel]]]:
    """(path suffix, model) for the models a field holds: a model, a list/dict of them, or a tagged union."""
    ann = _unwrap(ann)
    origin = typing.get_origin(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [("", ann)]
    if origin in (list, tuple):
        return [("[]" + s, m) for s, m in _models_in(typing.get_args(ann)[0])]
    if origin is dict:
        return [(".NAME" + s, m) for s, m in _models_in(typing.get_args(ann)[1])]
    if origin in (typing.Union, types.UnionType):
        return [s for a in typing.get_args(ann) for s in _models_in(a)]
    return []


def sections(root: type[BaseModel] = WatchdogConfig) -> list[Section]:
    """Every model of the schema once, depth-first (a section's sub-sections follow it), at its first path."""
    out: list[Section] = []
    seen: set[type[BaseModel]] = {root}

    def visit(sec: Section) -> None:
        out.append(sec)
        base = "" if sec.path == "(top level)" else sec.path
        for name, f in sec.model.model_fields.items():
            members = _models_in(f.annotation)
            for suffix, m in members:
                if m not in seen:
                    seen.add(m)
                    tag = _tag(m) if len(members) > 1 else None
                    visit(Section(f"{base}.{name}{suffix}".lstrip("."), m, tag))

    visit(Section("(top level)", root))
    return out


def _tag(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("type")
    args = typing.get_args(f.annotation) if f is not None else ()
    return str(args[0]) if args else None


def type_name(ann: Any) -> str:
    """A short reader's name of a field type."""
    ann = _unwrap(ann)
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(ann) if a is not type(None))
    if origin in (list, tuple):
        return f"list of {type_name(typing.get_args(ann)[0])}"
    if origin is dict:
        k, v = typing.get_args(ann)
        return f"map {type_name(k)} → {type_name(v)}"
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return " \\| ".join(str(m.value) for m in ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"section ({ann.__name__})"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path", dt.time: "HH:MM"}
    return names.get(ann, getattr(ann, "__name__", str(ann)))


def _yaml_value(v: Any) -> str:
    if isinstance(v, enum.Enum):
        return str(v.value)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dt.time):
        return v.strftime("%H:%M")
    if isinstance(v, dict):
        return json.dumps({str(k): _plain(x) for k, x in v.items()}, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return json.dumps([_plain(x) for x in v], ensure_ascii=False)
    return json.dumps(v, ensure_ascii=False)


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else str(v) if isinstance(v, Path) else v


def default_text(f: FieldInfo) -> str:
    """The default as YAML, `required`, or `(section)` for a nested section."""
    if f.is_required():
        return "required"
    v = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
    if v is PydanticUndefined:
        return "required"
    if isinstance(v, BaseModel):
        return "(section)"
    return "none" if v is None else f"`{_yaml_value(v)}`"


def unit_of(name: str) -> str:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return unit
    return ""


_EXAMPLES = {
    "container": "vllm", "unit": "vllm.service", "compose_project": "llm", "compose_service": "vllm",
    "url": "http://127.0.0.1:9100/metrics", "base_url": "https://127.0.0.1:7654", "model": "google/gemma-3-27b-it",
    "name": "vllm-0", "host": "smtp.example.com", "from_addr": "watchdog@example.com", "to": ["oncall@example.com"],
    "urls": ["http://alertmanager:9093"], "command": ["vllm", "serve", "MODEL", "--port", "7654"],
    "docker_host": "unix:///var/run/docker.sock", "server_hostname": "vllm.internal", "status_url":
    "https://watchdog.example.com", "template": "{{ title }}", "instance": "gpu-01", "group": "cluster-a",
    "source": "gpu-01", "basic_auth_username": "watchdog", "username": "watchdog", "local_hostname": "gpu-01",
    "expected_count": 8,
    "state_dir": "/var/lib/vllm-watchdog", "config_dir": "/etc/vllm-watchdog", "min_throughput_rps": 10,
    "labels": {"team": "ml"},
}


def example_of(name: str, f: FieldInfo) -> str:
    """A YAML example line for one key (none for a section: its own table follows)."""
    if _models_in(f.annotation):
        return ""
    if f.examples:
        return f"`{name}: {_yaml_value(f.examples[0])}`"
    if name in _EXAMPLES:
        return f"`{name}: {_yaml_value(_EXAMPLES[name])}`"
    if name.endswith("_env"):
        return f"`{name}: {name[:-4].upper()}`"
    if name.endswith("_file") or name.endswith("_dir"):
        return f"`{name}: /etc/vllm-watchdog/{name.rsplit('_', 1)[0]}`"
    d = default_text(f)
    if d in ("required", "(section)", "none"):
        return ""
    return f"`{name}: {d.strip('`')}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _see(f: FieldInfo, where: dict[type[BaseModel], str]) -> str:
    paths = [where[m] for _, m in _models_in(f.annotation) if m in where]
    return (" (keys: " + ", ".join(f"`{p}`" for p in paths) + ")") if paths else ""


def section_markdown(sec: Section, where: dict[type[BaseModel], str] | None = None) -> Iterator[str]:
    title = sec.path + (f" (type: {sec.tag})" if sec.tag else "")
    yield f"### `{title}`"
    yield ""
    doc = (sec.model.__doc__ or "").strip().splitlines()
    if doc:
        yield " ".join(line.strip() for line in doc if line.strip())
        yield ""
    yield "| Key | Type | Default | Unit | Meaning | Example |"
    yield "|---|---|---|---|---|---|"
    for name, f in sec.model.model_fields.items():
        key = f.alias or name
        yield (f"| `{key}` | {_cell(type_name(f.annotation))} | {_cell(default_text(f))} | {unit_of(name)} | "
               f"{_cell((f.description or '') + _see(f, where or {}))} | {_cell(example_of(key, f))} |")
    yield ""


def default_policies() -> dict[str, list[str]]:
    """kind → ["policy: step → step", …] from the shipped default policy file."""
    path = next((p for p in POLICY_CANDIDATES if p.exists()), None)
    out: dict[str, list[str]] = {}
    if path is None:
        return out
    data, _ = parse_yaml(read_capped(path), str(path))
    for pol in (data or {}).get("policies", []):
        steps = " → ".join(str(s.get("action")) for s in pol.get("steps", []))
        for kind in (pol.get("match") or {}).get("kinds", []):
            out.setdefault(str(kind), []).append(f"{pol.get('name')}: {steps}")
    return out


def kinds_markdown() -> Iterator[str]:
    yield "## Incident kinds"
    yield ""
    yield ("Severity is the one the detector gives (P0 worst); \"default policy\" is what "
           "`policies/default.yaml` does, step by step, when the incident opens.")
    yield ""
    yield "| Kind | Severity | Raised by | Default policy | What the operator should do |"
    yield "|---|---|---|---|---|"
    pols = default_policies()
    for kind in IncidentKind:
        d = KIND_DOCS.get(kind)
        if d is None:
            yield f"| `{kind.value}` | ? | undocumented | | |"
            continue
        policy = "; ".join(pols.get(kind.value, [])) or "none (notified only)"
        yield f"| `{kind.value}` | {d.severity} | {_cell(d.source)} | {_cell(policy)} | {_cell(d.action)} |"
    yield ""


INTRO = f"""# Configuration reference

Generated from the schema in `watchdog/config/` by `python -m watchdog.config.docs` (`make docs`);
do not edit by hand: a test fails when this file and the schema disagree.

`vllm-watchdog check -c FILE` validates a file offline; `check --live` also resolves every secret and
file, and checks the state dir, the HTTP port and the runtime exactly as `run` will. Every problem is
printed as `file:line: field: problem (fix)`.

- Unknown keys are errors (with a did-you-mean). Duplicate keys, files over 1 MiB and YAML aliases that
  expand beyond 100,000 nodes are refused.
- Any key can be overridden from the environment: `{ENV_PREFIX}HTTP__PORT=9400` sets `http.port`
  (sections joined by `__`); the environment wins over the file.
- Secrets are never inline: `*_env` names an environment variable, `*_file` a file holding the value.
  URLs with credentials (`user:pass@`, `?token=`…) and `Authorization`-style headers under `headers`
  are refused; use `url_env`/`url_file` and `secret_headers`.
- Relative paths resolve against the directory of the config file.
"""


def generate() -> str:
    """The whole reference as Markdown."""
    lines = [INTRO, "## Keys", ""]
    secs = sections()
    where = {sec.model: sec.path + (f" (type: {sec.tag})" if sec.tag else "") for sec in secs}
    for sec in secs:
        lines.extend(section_markdown(sec, where))
    lines.extend(kinds_markdown())
    return "\n".join(lines).rstrip() + "\n"


def undocumented(root: type[BaseModel] = WatchdogConfig) -> list[str]:
    """`path.key` of every field without a description (the docs test wants none)."""
    return [f"{sec.path}.{name}" for sec in sections(root) for name, f in sec.model.model_fields.items()
            if not (f.description or "").strip()]


def main() -> None:
    print(generate(), end="")


if __name__ == "__main__":
    main()


__all__ = ["Section", "generate", "sections", "undocumented"]
