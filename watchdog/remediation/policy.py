"""The declarative remediation policy language (YAML files in `policies/`). Stage: remediate (decide).

A policy matches incidents (kind, severity, target, labels) and names a *ladder* of steps tried in order
on repeated occurrences, each step an action with its own parameters and optional guard overrides.
Guards, the ladder window and the stop timeout default to `remediation.defaults`; user policy files are
merged over the shipped ones by name. Each step model says what it is (class attributes `disruptive`,
`touches_target`, `verified`) and what it needs from a target (`lacks`), so adding an action is one step
model here plus its function in actions.ACTIONS. This module parses, validates and matches; it must never
run an action.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from watchdog.config.loader import LineMap, problem_from_error
from watchdog.config.models import GuardSettings, RemediationDefaults
from watchdog.config.yamlsafe import parse_yaml, read_capped
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


Guards = GuardSettings  # the effective guard values (defaults ← policy ← step)


class GuardOverrides(_S):
    """Per-policy or per-step guard overrides: an unset field inherits from `remediation.defaults`."""

    cooldown_s: float | None = Field(None, ge=0)
    max_attempts: int | None = Field(None, ge=1)
    window_s: float | None = Field(None, gt=0)
    backoff_initial_s: float | None = Field(None, ge=0)
    backoff_factor: float | None = Field(None, ge=1)
    backoff_max_s: float | None = Field(None, ge=0)
    backoff_reset_s: float | None = Field(None, gt=0)


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
    """One ladder step. Class attributes say what kind of action it is (one place for every registry):
    `disruptive`: stops the server for a while (forbidden by preconditions such as gpu_lost or an operator
    stop); `touches_target`: spends the guards' budget and back-off (notify/escalate never do); `verified`:
    success is proven by readiness passing again; `needs_runtime`: skipped on a target without a runtime."""

    disruptive: ClassVar[bool] = False
    touches_target: ClassVar[bool] = True
    verified: ClassVar[bool] = False
    needs_runtime: ClassVar[bool] = False

    guards: GuardOverrides = GuardOverrides()
    note: str = ""
    repeat: bool = Field(False, description="The ladder stays on this (last) step while the incident is open; "
                         "the guards (back-off, budget) pace it — kubelet's CrashLoopBackOff")

    @property
    def action_name(self) -> str:
        return str(getattr(self, "action"))  # noqa: B009 - every concrete step has the Literal field

    def lacks(self, *, runtime: str | None, config_files: Collection[str]) -> str | None:
        """What the target lacks for this step (None: it can run). A lacking step is skipped at run time."""
        if self.needs_runtime and runtime is None:
            return "no runtime configured"
        return None


class RestartStep(_Step):
    disruptive: ClassVar[bool] = True
    verified: ClassVar[bool] = True
    needs_runtime: ClassVar[bool] = True
    action: Literal["restart"]
    timeout_s: float | None = Field(None, ge=0, description="Stop timeout before SIGKILL (default: policy's, "
                                    "then remediation.defaults.stop_timeout_s)")


class StartStep(_Step):
    disruptive: ClassVar[bool] = True
    verified: ClassVar[bool] = True
    needs_runtime: ClassVar[bool] = True
    action: Literal["start"]


class StopStep(_Step):
    needs_runtime: ClassVar[bool] = True
    action: Literal["stop"]
    timeout_s: float | None = Field(None, ge=0)


class RecreateStep(_Step):
    disruptive: ClassVar[bool] = True
    verified: ClassVar[bool] = True
    needs_runtime: ClassVar[bool] = True
    action: Literal["recreate"]


class SetConfigStep(_Step):
    disruptive: ClassVar[bool] = True
    verified: ClassVar[bool] = True
    needs_runtime: ClassVar[bool] = True
    action: Literal["set_config"]
    config: str = Field(description="Name of one of the target's config_files")
    edits: list[Edit] = Field(min_length=1)
    then: Literal["recreate", "none"] = "recreate"

    def lacks(self, *, runtime: str | None, config_files: Collection[str]) -> str | None:
        if self.config not in config_files:
            return f"no config file named '{self.config}'"
        return super().lacks(runtime=runtime, config_files=config_files) if self.then == "recreate" else None


class RollbackStep(_Step):
    disruptive: ClassVar[bool] = True
    verified: ClassVar[bool] = True
    needs_runtime: ClassVar[bool] = True
    action: Literal["rollback_config"]
    config: str | None = Field(None, description="Config file name; default: all of the target's files")
    source: Literal["snapshot", "git"] = "snapshot"
    then: Literal["recreate", "none"] = "recreate"

    def lacks(self, *, runtime: str | None, config_files: Collection[str]) -> str | None:
        if self.config is None and not config_files:
            return "no config files"
        if self.config is not None and self.config not in config_files:
            return f"no config file named '{self.config}'"
        return super().lacks(runtime=runtime, config_files=config_files) if self.then == "recreate" else None


class PruneStep(_Step):
    action: Literal["prune"]
    paths: list[Path] = Field(default_factory=list, description="Extra temp/cache dirs to empty")
    build_cache: bool = True

    def lacks(self, *, runtime: str | None, config_files: Collection[str]) -> str | None:
        if runtime != "docker" and not self.paths:
            return "no docker runtime and no paths to prune"
        return None


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
    touches_target: ClassVar[bool] = False
    action: Literal["notify"]
    message: str = ""
    receivers: list[str] = Field(default_factory=list, description="Also tell these receivers (by name)")


class EscalateStep(_Step):
    touches_target: ClassVar[bool] = False
    action: Literal["escalate"]
    severity: Severity = Severity.P0
    message: str = ""
    receivers: list[str] = Field(default_factory=list, description="Also page these receivers (by name)")


_STEPS = (
    RestartStep | StartStep | StopStep | RecreateStep | SetConfigStep | RollbackStep | PruneStep | HttpCallStep
    | ExecStep | NotifyStep | EscalateStep
)
Step = Annotated[_STEPS, Field(discriminator="action")]
# the registries below are derived from the step models: adding an action never edits them
STEP_TYPES: dict[str, type[_Step]] = {get_args(c.model_fields["action"].annotation)[0]: c for c in get_args(_STEPS)}
ACTION_NAMES = tuple(STEP_TYPES)
RESTART_LIKE = frozenset(a for a, c in STEP_TYPES.items() if c.disruptive)
TOUCHES_TARGET = frozenset(a for a, c in STEP_TYPES.items() if c.touches_target)
VERIFIED = frozenset(a for a, c in STEP_TYPES.items() if c.verified)


class Policy(_S):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    enabled: bool = Field(True, description="false disables the policy (e.g. a shipped one, by its name)")
    match: Match = Match()
    priority: int = Field(50, description="When several open incidents of a target match, the highest acts")
    dry_run: bool = False
    guards: GuardOverrides = Field(GuardOverrides(), description="Overrides of remediation.defaults")
    verify: Verify = Verify()
    ladder_window_s: float | None = Field(
        None, gt=0, description="A same-kind incident within this long after the last one resolved continues "
        "its ladder; otherwise the ladder starts at step 1 (default: remediation.defaults.ladder_window_s)"
    )
    stop_timeout_s: float | None = Field(
        None, ge=0, description="Stop grace before SIGKILL for this policy's restart/stop steps (default: the "
        "target's, which defaults to remediation.defaults.stop_timeout_s)"
    )
    forbid_restart_when: list[str] = Field(
        default_factory=lambda: ["gpu_lost", "gpu_not_visible", "startup_memory"],
        description="Open incident kinds on the target (or host) that forbid restart-like steps: escalate instead",
    )
    steps: list[Step] = Field(default_factory=list, description="The ladder (required unless this overrides "
                              "a shipped policy of the same name)")


class PolicyFile(_S):
    policies: list[Policy] = Field(min_length=1)


class PolicySet:
    """All policies, in file order, with matching and the effective guards (defaults ← policy ← step)."""

    def __init__(self, policies: Sequence[Policy], files: Sequence[str] = (),
                 defaults: RemediationDefaults | None = None, warnings: Sequence[Problem] = ()) -> None:
        self.policies = list(policies)
        self.files = list(files)
        self.defaults = defaults or RemediationDefaults()
        self.warnings = list(warnings)  # problems that do not stop the daemon (e.g. steps skipped per target)

    def matching(self, incident: Incident) -> Policy | None:
        """The enabled policy with the highest priority that matches; on a tie the later one (a user file's
        policy over a shipped one)."""
        best: Policy | None = None
        for p in self.policies:
            if p.enabled and matches(p.match, incident) and (best is None or p.priority >= best.priority):
                best = p
        return best

    def by_name(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)

    def guards(self, policy: Policy, step: _Step | None = None) -> Guards:
        g = Guards(**self.defaults.model_dump(include=set(Guards.model_fields)))
        for o in (policy.guards, step.guards if step is not None else None):
            if o is not None:
                g = g.model_copy(update={k: v for k, v in o.model_dump().items() if v is not None})
        return g

    def ladder_window_s(self, policy: Policy) -> float:
        return policy.ladder_window_s if policy.ladder_window_s is not None else self.defaults.ladder_window_s


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
    data, node = parse_yaml(text, file)  # size, alias and duplicate-key limits of every watchdog file
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
                field = p.field.removesuffix(".type")  # the config converter names `type` tags; steps use `action`
                field = field if field.endswith(".action") else field + ".action"
                p = Problem(p.file, p.line, field, f"unknown action '{bad}'", f"known: {', '.join(ACTION_NAMES)}")
            problems.append(p)
        raise ConfigError(problems) from None


def _read(f: Path, problems: list[Problem]) -> list[Policy]:
    try:
        text = read_capped(f, fix="check remediation.policy_files")
    except ConfigError as e:
        problems.extend(e.problems)
        return []
    try:
        return load_policy_text(text, str(f))
    except ConfigError as e:
        problems.extend(e.problems)
        return []


def _override(base: Policy, user: Policy) -> Policy:
    """`user` names a shipped policy: the keys it sets replace the shipped ones (guards and verify key by key)."""
    update: dict[str, Any] = {}
    for k in user.model_fields_set - {"name"}:
        v = getattr(user, k)
        if k in ("guards", "verify"):
            v = getattr(base, k).model_copy(update={f: getattr(v, f) for f in v.model_fields_set})
        update[k] = v
    return base.model_copy(update=update)


def load_policies(
    files: Iterable[Path], *, shipped: Path | None = None, defaults: RemediationDefaults | None = None
) -> PolicySet:
    """The shipped policies (if `shipped`), with every user file's policies merged over them by name: the
    same name overrides the keys it sets, `enabled: false` disables it, a new name adds a policy."""
    problems: list[Problem] = []
    merged: dict[str, Policy] = {}
    used: list[str] = []
    if shipped is not None:
        used.append(str(shipped))
        merged = {p.name: p for p in _read(shipped, problems)}
    shipped_names = set(merged)
    names: dict[str, str] = {}
    for f in files:
        if shipped is not None and Path(f).resolve() == shipped.resolve():
            continue  # naming the shipped file again changes nothing
        used.append(str(f))
        for p in _read(Path(f), problems):
            if p.name in names:
                problems.append(Problem(str(f), None, f"policies.{p.name}", "policy name is used twice",
                                        f"first in {names[p.name]}; rename one"))
            names[p.name] = str(f)
            merged[p.name] = _override(merged[p.name], p) if p.name in shipped_names else p
    for p in merged.values():
        if p.enabled and not p.steps:
            problems.append(Problem(names.get(p.name, used[0] if used else "policies"), None,
                                    f"policies.{p.name}.steps", "an enabled policy needs at least one step",
                                    "add steps, or name a shipped policy to override it"))
    if problems:
        raise ConfigError(problems)
    return PolicySet(list(merged.values()), used, defaults)


def _skipped_steps(ps: PolicySet, targets: Mapping[str, set[str]], runtimes: Mapping[str, str | None]) -> list[Problem]:
    """Warnings: steps a target lacks something for (a config file, a runtime) are skipped there at run time."""
    out: list[Problem] = []
    for t, files in targets.items():
        missing: dict[str, list[str]] = {}
        for p in ps.policies:
            if not p.enabled or (p.match.targets and t not in p.match.targets):
                continue
            for i, s in enumerate(p.steps):
                why = s.lacks(runtime=runtimes.get(t), config_files=files)
                if why is not None:
                    missing.setdefault(why, []).append(f"{p.name}[{i + 1}] {s.action_name}")
        for why, steps in missing.items():
            out.append(Problem("policies", None, f"targets.{t}",
                               f"{why}: {len(steps)} step(s) will be skipped for this target ({', '.join(steps)})",
                               "add what is missing to the target, or ignore this if it is on purpose",
                               severity="warning"))
    return out


def cross_check(
    ps: PolicySet, *, targets: dict[str, set[str]], receivers: set[str], known_kinds: set[str] | None = None,
    runtimes: Mapping[str, str | None] | None = None,
) -> list[Problem]:
    """Problems that need the whole config: unknown targets/kinds/receivers, ladders that never fire (errors),
    and steps a target lacks something for (warnings: they are skipped there at run time).

    `targets` maps target name → names of its config files; `runtimes` target name → runtime kind or None.
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
            if s.repeat and i < len(p.steps) - 1:
                problems.append(Problem(file, None, f"{where}.steps[{i}].repeat",
                                        "only the last step can repeat", "move it to the end"))
            for r in getattr(s, "receivers", []) or []:
                if r not in receivers:
                    problems.append(Problem(file, None, f"{where}.steps[{i}].receivers",
                                            f"no receiver named '{r}'",
                                            "known: " + (", ".join(sorted(receivers)) or "none configured")))
    rts = runtimes if runtimes is not None else {t: "configured" for t in targets}
    return problems + _skipped_steps(ps, targets, rts)
