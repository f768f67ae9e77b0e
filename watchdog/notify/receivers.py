"""Builds the configured receivers and the routing tree from `notify:` in watchdog.yaml. Stage: wiring.

`check_notify` validates receivers, templates and routes for `vllm-watchdog check` without resolving
secrets (the check host need not hold them); `build_all` resolves them at daemon start, where a missing
secret is an error naming the field. Must never send anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.config.models import WatchdogConfig
from watchdog.errors import ConfigError, Problem
from watchdog.model import Notification
from watchdog.notify.notifiers import build_notifier, parse_receiver
from watchdog.notify.routing import Router, parse_route, route_all
from watchdog.protocols import Notifier


def _parsed(cfg: WatchdogConfig, file: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    out: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    for i, r in enumerate(cfg.notify.receivers):
        try:
            out.append((r.name, parse_receiver(r.model_dump(), file=file, where=f"notify.receivers[{i}]")))
        except ConfigError as e:
            problems.extend(e.problems)
    return out, problems


def check_notify(cfg: WatchdogConfig, file: str) -> list[Problem]:
    parsed, problems = _parsed(cfg, file)
    names = {n for n, _ in parsed} | {r.name for r in cfg.notify.receivers}
    try:
        route = parse_route(cfg.notify.route, file=file)
    except ConfigError as e:
        return problems + e.problems
    if route is not None:
        for msg in Router(route).validate(names):
            problems.append(Problem(file, None, "notify.route", msg, "use a name from notify.receivers"))
    for name, rc in parsed:
        tpl = getattr(rc, "template", None)
        if tpl:
            from watchdog.notify.render import validate_template

            for err in validate_template(tpl):
                problems.append(Problem(file, None, f"notify.receivers.{name}.template", err, "fix the template"))
    return problems


def build_all(cfg: WatchdogConfig, client: httpx.AsyncClient, clock: Clock) -> dict[str, Notifier]:
    parsed, problems = _parsed(cfg, "watchdog.yaml")
    if problems:
        raise ConfigError(problems)
    return {
        name: build_notifier(name, rc, client, clock, base_dir=cfg.config_dir, source="watchdog.yaml")
        for name, rc in parsed
    }


def router_for(cfg: WatchdogConfig, receivers: set[str]) -> Callable[[Notification, float], list[str]]:
    route = parse_route(cfg.notify.route) or route_all(sorted(receivers))
    router = Router(route)
    return router.route
