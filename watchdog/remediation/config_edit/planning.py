"""Plan and apply config edits on one file: before/after per key or a refusal, then an atomic write.

Stage: act (part of `watchdog.remediation.config_edit`; the `set_config` action decides *when*). `plan`
reads the file and computes every edit (all or nothing); `apply` writes the planned bytes atomically
after a timestamped backup, refusing when the file changed since it was planned. This module must never
write when any edit of a plan is refused, and never put any value other than the edited keys' into a
message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.adapters.fs import DEFAULT_MAX_BYTES, FsError, atomic_write, read_bytes_limited, sha256_bytes
from watchdog.clock import Clock
from watchdog.remediation.config_edit.compute import compute
from watchdog.remediation.config_edit.envfile import env_lookup, env_set, parse_env
from watchdog.remediation.config_edit.settings import (
    ConfigEditError,
    Edit,
    Format,
    RefusalCode,
    Refuse,
    SettingSpec,
    setting_spec,
)
from watchdog.remediation.config_edit.yamlfile import yaml_lookup, yaml_root, yaml_scalar_text, yaml_set


@dataclass(frozen=True)
class ConfigFile:
    """A file holding vLLM settings and how it is written."""

    path: Path
    format: Format


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
        span = env_lookup(parse_env(text, file.path), key)
        return key, (span.value if span is not None else None)
    found = yaml_lookup(yaml_root(text, file.path), key)
    if found is None:
        return key, None
    return str(found[0].value), yaml_scalar_text(file.path, key, found[1])


def read_setting(file: ConfigFile, setting: str, key: str | None = None,
                 *, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """The effective value text of `setting` in `file` (last occurrence), or None when absent."""
    data = _read(file, max_bytes)
    text = _decode(data, file)
    spec = setting_spec(setting, key)
    try:
        return _current(text, file, spec)[1]
    except Refuse as r:
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
                raise Refuse(RefusalCode.BAD_EDIT, "is edited twice in one step")
            seen.add(spec.name)
            after = compute(spec, edit, before)
        except Refuse as r:
            items.append(PlannedEdit(edit, key, before, None, r.code, f"{r.code}: {where}: {r.detail}"))
            continue
        try:
            text = env_set(text, file.path, key, after) if file.format == "env" else \
                yaml_set(text, file.path, key, after)
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


__all__ = ["AppliedChange", "Change", "ConfigFile", "Plan", "PlannedEdit", "apply", "env_for", "plan",
           "read_setting"]
