"""CLI verbs that test the notification path before an incident does: `notify test RECEIVER` (a marked test
notification through the real outbox) and `routes test --labels k=v …` (which receivers an incident with
those labels reaches, like `amtool config routes test`); plus `completion bash|zsh|tcsh`. Stage: operator
interface (composition: it may use the notify stage and the store).

`notify test` writes one outbox row marked `test`; a running daemon's dispatcher delivers it (the CLI waits
for the outcome), and with no daemon running the CLI delivers that one row itself through the configured
notifier and records the outcome on it. It must never deliver any other row, never print a secret, and
`routes test` must never send anything.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
import uuid
from typing import Any

import httpx
import shtab

from watchdog.cli_common import (
    EXIT_ATTENTION,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Located,
    duration_arg,
    emit_json,
    format_duration,
    locate,
    open_store,
)
from watchdog.cli_read import did_you_mean
from watchdog.clock import SystemClock
from watchdog.config.models import WatchdogConfig
from watchdog.errors import ConfigError
from watchdog.model import DeliveryOutcome, EventKind, Notification, Severity
from watchdog.notify.receivers import build_all, router_for
from watchdog.store import OutboxRow, Store

TEST_KIND = "watchdog_test"
POLL_S = 0.2


# ---------------------------------------------------------------------- notify test
def test_notification(receiver: str, target: str, severity: Severity, now: float) -> Notification:
    host = socket.gethostname()
    return Notification(
        id=f"test-{uuid.uuid4().hex}", event=EventKind.OPENED, incident_id=0, fingerprint=f"test:{receiver}:{now}",
        target=target, kind=TEST_KIND, severity=severity,
        title=f"[TEST] vllm-watchdog test notification to {receiver}",
        summary=f"[TEST] a test notification sent with `vllm-watchdog notify test {receiver}` on {host}: nothing is "
                "wrong, no action is needed.",
        created_at=now, opened_at=now, labels={"test": "true", "target": target},
        details={"test": True, "sent_by": "vllm-watchdog notify test", "host": host},
    )


def _receivers(cfg: WatchdogConfig) -> dict[str, Any]:
    return {(r.name or r.type): r for r in cfg.notify.receivers}


def _row(st: Store, notification_id: str, receiver: str) -> OutboxRow | None:
    for r in st.outbox_rows(limit=200):
        if r.notification_id == notification_id and r.receiver == receiver:
            return r
    return None


async def _deliver_directly(loc: Located, st: Store, n: Notification, receiver: str) -> tuple[str, str]:
    """No daemon runs: deliver the test row through the configured notifier and record the outcome on it."""
    cfg = loc.require()
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            notifier = build_all(cfg, client, SystemClock(), source=loc.config_path)[receiver]
        except ConfigError as e:
            raise CliError(f"receiver {receiver!r} cannot be built: {e}", EXIT_USAGE) from None
        try:
            d = await notifier.send(n)
        finally:
            await notifier.aclose()
    row = _row(st, n.id, receiver)
    if row is not None:
        if d.outcome == DeliveryOutcome.OK:
            st.mark_sent(row.id, time.time())
        else:  # never left pending: a later daemon must not deliver a stale test
            st.mark_dead(row.id, f"notify test: {d.reason}"[:500])
    return ("sent" if d.outcome == DeliveryOutcome.OK else "dead"), d.reason


def _await_daemon(st: Store, n: Notification, receiver: str, wait_s: float) -> tuple[str, str]:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        row = _row(st, n.id, receiver)
        if row is not None and (row.state != "pending" or row.attempts > 0):
            return row.state if row.state != "pending" else "retrying", row.last_error
        time.sleep(POLL_S)
    return "pending", (f"the daemon did not deliver it within {format_duration(wait_s)} (see `vllm-watchdog outbox "
                       "list`)")


def cmd_notify_test(args: argparse.Namespace) -> int:
    loc = locate(args.config)
    cfg = loc.require()
    known = _receivers(cfg)
    if args.receiver not in known:
        raise CliError(did_you_mean("receiver", args.receiver, sorted(known)), EXIT_USAGE)
    target = args.target or (cfg.targets[0].name if cfg.targets else "vllm-watchdog")
    now = time.time()
    n = test_notification(args.receiver, target, Severity(args.severity), now)
    st = open_store(loc, readonly=False)
    st.enqueue(notification_id=n.id, receiver=args.receiver, incident_id=0, fingerprint=n.fingerprint,
               event=n.event.value, payload=n.to_dict(), now=now)
    pid = loc.daemon_pid()
    if pid is not None:
        via = f"the running daemon (pid {pid})"
        state, reason = _await_daemon(st, n, args.receiver, args.wait)
    else:
        via = "this command (no daemon runs)"
        state, reason = asyncio.run(_deliver_directly(loc, st, n, args.receiver))
    ok = state == "sent"
    if args.json:
        emit_json({"receiver": args.receiver, "notification_id": n.id, "delivered_by": via, "state": state,
                   "ok": ok, "reason": reason})
    else:
        print(f"test notification {n.id} to {args.receiver} ({known[args.receiver].type}), delivered by {via}: "
              f"{state}{' — ' + reason if reason else ''}")
    return EXIT_OK if ok else EXIT_ATTENTION


# ---------------------------------------------------------------------- routes test
def parse_labels(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CliError(f"--labels {item!r}: use key=value (e.g. severity=P0 target=vllm kind=service_down)",
                           EXIT_USAGE)
        out[k.strip()] = v.strip()
    return out


def cmd_routes_test(args: argparse.Namespace) -> int:
    loc = locate(args.config)
    cfg = loc.require()
    labels = parse_labels([x for group in args.labels for x in group])
    sev = labels.pop("severity", "P1").upper()
    if sev not in {s.value for s in Severity}:
        raise CliError(f"severity {sev!r}: use one of P0, P1, P2, P3", EXIT_USAGE)
    target = labels.pop("target", cfg.targets[0].name if cfg.targets else "")
    kind = labels.pop("kind", "service_down")
    now = time.time() if args.at is None else args.at
    n = Notification(id="routes-test", event=EventKind.OPENED, incident_id=0, fingerprint="routes-test",
                     target=target, kind=kind, severity=Severity(sev), title="", summary="", created_at=now,
                     opened_at=now, labels=labels)
    receivers = router_for(cfg, set(_receivers(cfg)))(n, now)
    verify_ok = True
    if args.verify_receivers is not None:
        want = [r.strip() for r in args.verify_receivers.split(",") if r.strip()]
        verify_ok = sorted(want) == sorted(receivers)
    if args.json:
        emit_json({"target": target, "kind": kind, "severity": sev, "labels": labels, "receivers": receivers,
                   **({"verify_ok": verify_ok} if args.verify_receivers is not None else {})})
    else:
        print(",".join(receivers) if receivers else "(no receiver: this incident would not be told to anyone)")
        if not verify_ok:
            print(f"WARNING: expected receivers {args.verify_receivers!r} do not match", file=sys.stderr)
    return EXIT_OK if verify_ok else EXIT_ATTENTION


# ---------------------------------------------------------------------- completion
def cmd_completion(args: argparse.Namespace) -> int:
    print(shtab.complete(args.root_parser, shell=args.shell))
    return EXIT_OK


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser], js: argparse.ArgumentParser,
                root: argparse.ArgumentParser) -> None:
    """Register `notify test`, `routes test` and `completion`."""
    p = sub.add_parser("notify", parents=parents, help="test the notification path")
    ns = p.add_subparsers(dest="notify_cmd", required=True, metavar="{test}")
    t = ns.add_parser("test", parents=[*parents, js], help="send a marked test notification through the outbox")
    t.add_argument("receiver", help="receiver name (notify.receivers[].name)")
    t.add_argument("--target", help="target named in the test (default: the first target)")
    t.add_argument("--severity", choices=["P0", "P1", "P2", "P3"], default="P3",
                   help="severity shown in the test (default P3)")
    t.add_argument("--wait", type=duration_arg, default=30.0, metavar="DURATION",
                   help="how long to wait for a running daemon to deliver it (e.g. 90s, 2m; default 30s)")
    t.set_defaults(func=cmd_notify_test)
    p = sub.add_parser("routes", parents=parents, help="test the routing tree")
    rs = p.add_subparsers(dest="routes_cmd", required=True, metavar="{test}")
    r = rs.add_parser("test", parents=[*parents, js], help="which receivers an incident with these labels reaches")
    r.add_argument("--labels", nargs="+", action="append", default=[], metavar="K=V",
                   help="severity=P0 target=NAME kind=KIND and any incident label (default severity P1)")
    r.add_argument("--verify-receivers", metavar="A,B", help="exit 1 unless exactly these receivers are reached")
    r.add_argument("--at", type=float, default=None, metavar="UNIX_TIME",
                   help="evaluate active_time windows at this time (default now)")
    r.set_defaults(func=cmd_routes_test)
    c = sub.add_parser("completion", parents=parents, help="print a shell completion script (eval it, or save it)")
    c.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    c.set_defaults(func=cmd_completion, root_parser=root)


__all__ = ["add_parsers", "cmd_notify_test", "cmd_routes_test", "parse_labels", "test_notification"]
