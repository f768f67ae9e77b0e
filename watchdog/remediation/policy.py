"""The declarative remediation policy language (YAML files in `policies/`). Stage: remediate (decide).

A policy matches incidents (kind, severity, target, labels) and names a *ladder* of steps tried in order
on repeated occurrences, each step an action with its own parameters and optional guard overrides.
This module parses and validates policies and matches incidents; it must never run an action.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from watchdog.config.loader import LineMap, problem_from_error
from watchdog.errors import ConfigError, Problem
from watchdog.model import Incident, IncidentKind, Severity

SHIPPED_DEFAULT = Path(__file__).resolve().parent.parent / "data" / "default_policy.yaml"


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, populate_by_name=True)


class Match(_S):
    kinds: list[str] = Field(default_factory=list, description="Incident kinds; empty = any")
    severities: list[Severity] = Field(default_factory=list, description="Empty = any")
    targets: list[str] = Field(default_factory=list, description="Target names; empty = any")
    labels: dict[str, str] = Field(default_factory=dict, description="Exact label values (regex with ~ prefix)")


class Guards(_S):
    """Every guard has a documented default; a step may override any of them."""

    cooldown_s: float = Field(30.0, ge=0, description="Quiet time after any action on the target")
    max_attempts: int = Field(5, ge=1, description="Actions per target within window_s before escalating")
    window_s: float = Field(3600.0, gt=0)
    backoff_initial_s: float = Field(10.0, ge=0, description="CrashLoopBackOff: 10 s doubling …")
    backoff_factor: float = Field(2.0, ge=1)
    backoff_max_s: float = Field(300.0, ge=0, description="… to this cap")
    backoff_reset_s: float = Field(600.0, gt=0, description="… reset after this long without an action")


class GuardOverrides(_S):
    cooldown_s: float | None = Field(None, ge=0)
    max_attempts: int | None = Field(None, ge=1)
    window_s: float | None = Field(None, gt=0)
    backoff_initial_s: float | None = Field(None, ge=0)
    backoff_max_s: float | None = Field(None, ge=0)


class Verify(_S):
    timeout_s: float = Field(300.0, gt=0, description="Readiness must pass again within this")
    hold_s: float = Field(1.0, ge=0, description="Probes hold this long after the action before checking")
    interval_s: float = Field(1.0, gt=0)


class Edit(_S):
    setting: str = Field(description="gpu_memory_utilization, max_num_seqs, … or any key")
    op: Literal["set", "step", "scale"]
    value: float | int | str
    floor: float | None = None
    ceiling: float | None = None
    key: str | None = Field(None, description="Exact key in the file when it differs from the canonical name")

    @model_validator(mode="after")
    def _bounds(self) -> Edit:
        if self.floor is not None and self.ceiling is not None and self.floor > self.ceiling:
            raise ValueError(f"floor {self.floor} is above ceiling {self.ceiling}")
        if self.op in ("step", "scale") and not isinstance(self.value, int | float):
            raise ValueError(f"op '{self.op}' needs a number as value")
        if self.op == "scale" and isinstance(self.value, int | float) and self.value <= 0:
            raise ValueError("scale factor must be > 0")
        return self


class _Step(_S):
    guards: GuardOverrides = GuardOverrides()
    note: str = ""


class RestartStep(_Step):
    action: Literal["restart"]
    timeout_s: float | None = Field(None, ge=0, description="Stop timeout before SIGKILL (default: runtime's)")


class StartStep(_Step):
    action: Literal["start"]


class StopStep(_Step):
    action: Literal["stop"]
    timeout_s: float | None = Field(None, ge=0)


class RecreateStep(_Step):
    action: Literal["recreate"]


class SetConfigStep(_Step):
    action: Literal["set_config"]
    config: str = Field(description="Name of one of the target's config_files")
    edits: list[Edit] = Field(min_length=1)
    then: Literal["recreate", "none"] = "recreate"


class RollbackStep(_Step):
    action: Literal["rollback_config"]
    config: str | None = Field(None, description="Config file name; default: all of the target's files")
    source: Literal["snapshot", "git"] = "snapshot"
    then: Literal["recreate", "none"] = "recreate"


class PruneStep(_Step):
    action: Literal["prune"]
    paths: list[Path] = Field(default_factory=list, description="Extra temp/cache dirs to empty")
    build_cache: bool = True


class HttpCallStep(_Step):
    action: Literal["http_call"]
    url: str
    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    headers: dict[str, str] = {}
    token_env: str | None = Field(None, description="Bearer token from this env var")
    token_file: Path | None = None
    body: Any = None
    expect_status: list[int] = Field(default_factory=lambda: [200, 202, 204])
    timeout_s: float = Field(10.0, gt=0)
    require_ready: bool = Field(True, description="Only once the vLLM target itself is ready again")


class ExecStep(_Step):
    action: Literal["exec"]
    argv: list[str] = Field(min_length=1, description="Run as an argv list, never through a shell")
    timeout_s: float = Field(60.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of the command")
    pass_env: list[str] = Field(default_factory=list, description="Daemon variables passed through by name "
                                "(the command gets only PATH, LANG/LC_*, HOME, TZ and the incident otherwise)")
    verify: bool = False


class NotifyStep(_Step):
    action: Literal["notify"]
    message: str = ""
    receivers: list[str] = Field(default_factory=list, description="Also tell these receivers (by name)")


class EscalateStep(_Step):
    action: Literal["escalate"]
    severity: Severity = Severity.P0
    message: str = ""
    receivers: list[str] = Field(default_factory=list, description="Also page these receivers (by name)")


Step = Annotated[
    RestartStep | StartStep | StopStep | RecreateStep | SetConfigStep | RollbackStep | PruneStep | HttpCallStep
    | ExecStep | NotifyStep | EscalateStep,
    Field(discriminator="action"),
]

ACTION_NAMES = (
    "restart", "start", "stop", "recreate", "set_config", "rollback_config", "prune", "http_call", "exec",
    "notify", "escalate",
)
RESTART_LIKE = frozenset({"restart", "start", "recreate", "set_config", "rollback_config"})


class Policy(_S):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    match: Match = Match()
    priority: int = Field(50, description="When several open incidents of a target match, the highest acts")
    dry_run: bool = False
    guards: Guards = Guards()
    verify: Verify = Verify()
    ladder_window_s: float = Field(
        3600.0, gt=0, description="Attempts older than this no longer count: the ladder starts again"
    )
    forbid_restart_when: list[str] = Field(
        default_factory=lambda: ["gpu_lost", "gpu_not_visible", "startup_memory"],
        description="Open incident kinds on the target (or host) that forbid restart-like steps: escalate instead",
    )
    steps: list[Step] = Field(min_length=1)


class PolicyFile(_S):
    policies: list[Policy] = Field(min_length=1)


class PolicySet:
    """All policies, in file order, with matching."""

    def __init__(self, policies: Sequence[Policy], files: Sequence[str] = ()) -> None:
        self.policies = list(policies)
        self.files = list(files)

    def matching(self, incident: Incident) -> Policy | None:
        best: Policy | None = None
        for p in self.policies:
            if matches(p.match, incident) and (best is None or p.priority > best.priority):
                best = p
        return best

    def by_name(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)


def matches(m: Match, inc: Incident) -> bool:
    if m.kinds and inc.kind not in m.kinds:
        return False
    if m.severities and inc.severity not in m.severities:
        return False
    if m.targets and inc.target not in m.targets:
        return False
    for k, v in m.labels.items():
        have = inc.labels.get(k)
        if have is None:
            return False
        if v.startswith("~"):
            if not re.fullmatch(v[1:], have):
                return False
        elif have != v:
            return False
    return True


def load_policy_text(text: str, file: str) -> list[Policy]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError([Problem(file, mark.line + 1 if mark else None, "(yaml)",
                                   f"not valid YAML: {getattr(e, 'problem', e)}", "fix the syntax")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top level)", "must be a mapping", "start with 'policies:'")])
    lines = LineMap(node)
    try:
        return PolicyFile.model_validate(data).policies
    except ValidationError as e:
        problems = []
        for err in e.errors(include_input=False):
            p = problem_from_error(err, file, lines, data, PolicyFile)
            if err.get("type") == "union_tag_invalid":
                bad = err.get("ctx", {}).get("tag", "?")
                field = p.field if p.field.endswith(".action") else p.field + ".action"
                p = Problem(p.file, p.line, field, f"unknown action '{bad}'", f"known: {', '.join(ACTION_NAMES)}")
            problems.append(p)
        raise ConfigError(problems) from None


def load_policies(files: Iterable[Path]) -> PolicySet:
    problems: list[Problem] = []
    policies: list[Policy] = []
    names: dict[str, str] = {}
    used: list[str] = []
    for f in files:
        used.append(str(f))
        try:
            text = Path(f).read_text(encoding="utf-8")
        except OSError as e:
            problems.append(Problem(str(f), None, "(file)", f"cannot be read ({e.__class__.__name__})",
                                    "check remediation.policy_files"))
            continue
        try:
            for p in load_policy_text(text, str(f)):
                if p.name in names:
                    problems.append(Problem(str(f), None, f"policies.{p.name}", "policy name is used twice",
                                            f"first in {names[p.name]}; rename one"))
                names[p.name] = str(f)
                policies.append(p)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return PolicySet(policies, used)


def cross_check(
    ps: PolicySet, *, targets: dict[str, set[str]], receivers: set[str], known_kinds: set[str] | None = None
) -> list[Problem]:
    """Problems that need the whole config: unknown targets/config files/kinds, ladders that never fire.

    `targets` maps target name → names of its config files.
    """
    kinds = known_kinds if known_kinds is not None else {k.value for k in IncidentKind}
    problems: list[Problem] = []
    file = ps.files[0] if len(ps.files) == 1 else "policies"
    for p in ps.policies:
        where = f"policies.{p.name}"
        for k in p.match.kinds:
            if k not in kinds:
                problems.append(Problem(file, None, f"{where}.match.kinds", f"unknown incident kind '{k}'",
                                        "known: " + ", ".join(sorted(kinds))))
        for t in p.match.targets:
            if t not in targets:
                problems.append(Problem(file, None, f"{where}.match.targets", f"no target named '{t}'",
                                        "known: " + ", ".join(sorted(targets))))
        for i, s in enumerate(p.steps):
            if s.action in ("escalate", "notify") and i < len(p.steps) - 1 and s.action == "escalate":
                problems.append(Problem(
                    file, None, f"{where}.steps[{i + 1}]",
                    "this step can never run: 'escalate' before it stops the ladder",
                    "move 'escalate' to the end",
                ))
                break
            for r in getattr(s, "receivers", []) or []:
                if r not in receivers:
                    problems.append(Problem(file, None, f"{where}.steps[{i}].receivers",
                                            f"no receiver named '{r}'",
                                            "known: " + (", ".join(sorted(receivers)) or "none configured")))
            if isinstance(s, SetConfigStep | RollbackStep) and s.config is not None:
                scope = p.match.targets or list(targets)
                for t in scope:
                    if t in targets and s.config not in targets[t]:
                        problems.append(Problem(
                            file, None, f"{where}.steps[{i}].config",
                            f"target '{t}' has no config file named '{s.config}'",
                            "add it under the target's config_files or restrict match.targets",
                        ))
        if p.match.severities == [] and p.match.kinds == [] and p.match.targets == [] and not p.match.labels:
            pass  # a catch-all policy is allowed
    return problems
