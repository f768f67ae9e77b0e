"""Error types. Stage: none.

Errors carry a location (file, line, field) and a fix, and must never carry a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in a config or policy file: `file:line: field: what is wrong (what would be right)`."""

    file: str
    line: int | None
    field: str
    message: str
    fix: str = ""
    severity: str = "error"  # "warning": reported by `check`, never stops a load (e.g. a step skipped per target)

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line is not None else self.file
        tail = f" ({self.fix})" if self.fix else ""
        return f"{loc}: {self.field}: {self.message}{tail}"


class WatchdogError(Exception):
    """Base class for the watchdog's own errors."""


class ConfigError(WatchdogError):
    """Config or policy files are invalid; holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ActionError(WatchdogError):
    """An action could not be carried out (the reason is safe to log)."""


class RuntimeUnavailable(WatchdogError):
    """The runtime (docker daemon, systemd) cannot be reached right now."""


class CoordinatorUnavailable(WatchdogError):
    """The fleet coordinator (etcd) cannot answer a linearizable request right now (no quorum, timeout)."""
