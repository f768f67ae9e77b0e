"""Load what `run`, `check`, the demo and the benches need: the config, the shipped policies merged with the
user's, and every cross reference. Stage: composition (it may import any stage package).

It lives apart from the CLI so that the CLI, the demo and the benches import it without importing each
other. It must never start anything, open the state database or touch the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from watchdog import preflight
from watchdog.config import load_file
from watchdog.errors import ConfigError, Problem
from watchdog.remediation.policy import cross_check, load_policies

REPO_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"
PKG_POLICY = Path(__file__).resolve().parent / "data" / "default_policy.yaml"


def default_policy_files() -> list[Path]:
    return [REPO_POLICY if REPO_POLICY.exists() else PKG_POLICY]


def load_all(config: str) -> tuple[Any, Any]:
    """Config + policies + cross references, or ConfigError with every problem."""
    problems: list[Problem] = []
    cfg = load_file(config)
    try:  # the shipped policies, with the user's files merged over them by name
        ps = load_policies(cfg.remediation.policy_files, shipped=default_policy_files()[0],
                           defaults=cfg.remediation.defaults)
    except ConfigError as e:
        raise ConfigError(e.problems) from None
    targets = {t.name: {c.name for c in t.config_files} for t in cfg.targets}
    runtimes = {t.name: (t.runtime.type if t.runtime is not None else None) for t in cfg.targets}
    receivers = {r.name for r in cfg.notify.receivers if r.name}
    found = cross_check(ps, targets=targets, receivers=receivers, runtimes=runtimes)
    problems.extend(p for p in found if p.severity != "warning")
    ps.warnings.extend(p for p in found if p.severity == "warning")  # steps skipped per target: `check` tells
    problems.extend(preflight.offline_problems(cfg, config))
    if problems:
        raise ConfigError(problems)
    return cfg, ps


__all__ = ["PKG_POLICY", "REPO_POLICY", "default_policy_files", "load_all"]
