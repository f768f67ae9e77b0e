"""The status page, the JSON API under `/api/v1/`, authenticated operator actions and the Alertmanager
webhook ingress. Stage: operator edge (read views, accept commands).

It renders what the composition root shows it (`protocols.StateViews`) and hands commands to it
(`protocols.Controls`); durable bookkeeping of a command (a silence, an incident history entry) goes to
the store. It must never import another stage package, never act on a target itself, never accept a
write without a valid token and a reason, and never put a target-supplied string into HTML as markup.
"""

from __future__ import annotations

from watchdog.web.app import WebApp
from watchdog.web.auth import Token, load_token
from watchdog.web.protocols import Controls, StateViews

__all__ = ["Controls", "StateViews", "Token", "WebApp", "load_token"]
