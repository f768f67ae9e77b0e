"""Builds the configured receivers and the routing tree from `notify:` in watchdog.yaml. Stage: wiring.

The loader has already validated every receiver and the route (their models live in
`watchdog.config.receivers` / `.routes`). `check_notify` adds what needs the notify stage: templates
rendered against a sample notification and route receivers that exist, without resolving secrets (the
check host need not hold them). `build_all` resolves the secrets at daemon start (and under
`check --live`), where a missing or bad secret is a `ConfigError` naming the field. Must never send
anything.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from watchdog.clock import Clock
from watchdog.config.models import WatchdogConfig
from watchdog.errors import ConfigError, Problem
from watchdog.model import Notification
from watchdog.notify.notifiers import build_notifier
from watchdog.notify.render import validate_template
from watchdog.notify.routing import Router, route_all
from watchdog.protocols import Notifier


def check_notify(cfg: WatchdogConfig, file: str) -> list[Problem]:
    """Problems of templates and route references (the loader checked the structure)."""
    problems: list[Problem] = []
    names = {r.name for r in cfg.notify.receivers if r.name}
    if cfg.notify.route is not None:
        for msg in Router(cfg.notify.route).validate(names):
            problems.append(Problem(file, None, "notify.route", msg, "use a name from notify.receivers"))
    for i, rc in enumerate(cfg.notify.receivers):
        if rc.template:
            for err in validate_template(rc.template):
                problems.append(Problem(file, None, f"notify.receivers[{i}].template", err, "fix the template"))
    return problems


def build_all(cfg: WatchdogConfig, client: httpx.AsyncClient, clock: Clock, *,
              source: str = "watchdog.yaml") -> dict[str, Notifier]:
    """Every receiver as a ready notifier (secrets resolved); ConfigError lists every receiver's problem."""
    out: dict[str, Notifier] = {}
    problems: list[Problem] = []
    for rc in cfg.notify.receivers:
        name = rc.name or rc.type
        try:
            out[name] = build_notifier(name, rc, client, clock, base_dir=cfg.config_dir, source=source)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return out


def router_for(cfg: WatchdogConfig, receivers: set[str]) -> Callable[[Notification, float], list[str]]:
    route = cfg.notify.route or route_all(sorted(receivers))
    router = Router(route)
    return router.route
