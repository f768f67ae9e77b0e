"""CLI verbs on the daemon's state: `status`, `incidents`, `history`, `silence`, `outbox`. Stage: operator
interface.

Read verbs ask the running daemon's HTTP endpoint first and read the state database when it does not
answer. `status` follows the LSB convention: 0 running with nothing P0/P1 open, 1 running but a P0/P1 is
open or the loop/state is degraded, 3 not running, 4 unknown (no usable config). This module must never
print a secret and never change state except through the explicit `silence add/rm` and `outbox retry/drop`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from typing import Any

from watchdog.cli_common import (
    EXIT_ATTENTION,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    CliError,
    Located,
    Paint,
    duration_arg,
    ellipsize,
    emit_json,
    fetch_json,
    format_duration,
    locate,
    open_store,
    table,
    ts,
)
from watchdog.model import IncidentKind
from watchdog.textsafe import safe_text
from watchdog.views import attempt_json, incident_json

URGENT = ("P0", "P1")
SUMMARY_WIDTH = 70


# ---------------------------------------------------------------------- status
def _from_store(loc: Located) -> dict[str, Any] | None:
    if loc.db is None or not loc.db.exists():
        return None
    st = open_store(loc)
    return {"open_incidents": [incident_json(i) for i in st.open_incidents()],
            "outbox": {f"{r}:{s}": n for (r, s), n in st.outbox_counts().items()}, "targets": {}}


def status_doc(loc: Located) -> tuple[int, dict[str, Any]]:
    """The verdict (healthy / degraded / unhealthy / not running) with its exit code and the evidence."""
    daemon = fetch_json(loc, "/status")
    pid = loc.daemon_pid()
    if daemon is not None and isinstance(daemon, dict):
        hz = fetch_json(loc, "/healthz") or {}
        doc: dict[str, Any] = {**daemon, "source": "daemon"}
        loop = {"healthy": bool(daemon.get("healthy")), "status": hz.get("status", "ok" if daemon.get("healthy")
                                                                            else "unhealthy"),
                "reason": hz.get("reason", daemon.get("reason"))}
        running = True
    else:
        doc = _from_store(loc) or {"open_incidents": [], "outbox": {}, "targets": {}}
        doc["source"] = "state database" if loc.db is not None and loc.db.exists() else "none"
        running = pid is not None
        loop = {"healthy": None, "status": "unknown", "reason": "the daemon's HTTP endpoint does not answer"}
    urgent = [i for i in doc.get("open_incidents", []) if i.get("severity") in URGENT]
    if not running:
        status, code = "not running", EXIT_NOT_RUNNING
        reason = f"no daemon holds {loc.state_dir}" + ("" if doc["source"] != "none" else
                                                       " and it has no state database yet")
    elif loop["healthy"] is False:
        status, code, reason = "unhealthy", EXIT_ATTENTION, f"loop: {loop['reason']}"
    elif loop["status"] == "degraded":
        status, code, reason = "degraded", EXIT_ATTENTION, f"state: {loop['reason']}"
    elif loop["healthy"] is None and loc.url is not None:
        status, code = "degraded", EXIT_ATTENTION
        reason = f"the daemon (pid {pid}) runs but its HTTP endpoint {loc.url} does not answer"
    elif urgent:
        sev = sorted({str(i["severity"]) for i in urgent})
        status, code, reason = "degraded", EXIT_ATTENTION, f"{len(urgent)} open {'/'.join(sev)} incident(s)"
    else:
        status, code, reason = "healthy", EXIT_OK, "running, nothing P0/P1 open"
    doc.update({"status": status, "healthy": status == "healthy", "reason": reason, "running": running,
                "pid": pid, "loop": loop, "exit_code": code})
    return code, doc


def cmd_status(args: argparse.Namespace) -> int:
    loc = locate(args.config)
    if loc.cfg is None:
        if args.json:
            emit_json({"status": "unknown", "healthy": None, "running": None, "reason": loc.problem,
                       "exit_code": EXIT_UNKNOWN})
        else:
            print(f"vllm-watchdog status unknown: {loc.problem}", file=sys.stderr)
        return EXIT_UNKNOWN
    code, doc = status_doc(loc)
    if args.json:
        emit_json(doc)
        return code
    paint = Paint()
    colour = {"healthy": "green", "degraded": "yellow"}.get(doc["status"], "red")
    who = f"pid {doc['pid']}" if doc["pid"] else "no daemon process"
    src = {"daemon": "its HTTP endpoint", "none": "nothing to read"}.get(doc["source"], f"the {doc['source']}")
    print(f"{paint(colour, doc['status'])}: {safe_text(str(doc['reason']))} ({who}; {src})")
    print(f"healthy: {str(doc['healthy']).lower()}")
    rows = [[n, str(t.get("runtime")), " ".join(f"{k}={v}" for k, v in t.get("probes", {}).items()),
             str(t.get("open_incidents")), "yes" if t.get("remediating") else "no"]
            for n, t in doc.get("targets", {}).items()]
    if rows:
        print(table(rows, ["target", "runtime", "probes", "open", "remediating"]))
    inc = doc.get("open_incidents", [])
    print(f"\nopen incidents: {len(inc)}")
    if inc:
        print(incident_table(inc))
    return code


# ---------------------------------------------------------------------- incidents / history
def incident_table(items: list[dict[str, Any]], wide: bool = False) -> str:
    w = 10_000 if wide else SUMMARY_WIDTH
    rows = [[str(i["id"]), i["severity"], i["state"], i["target"], i["kind"], ts(i["opened_at"]),
             ts(i.get("resolved_at")), ellipsize(str(i["summary"]), w)] for i in items]
    return table(rows, ["id", "sev", "state", "target", "kind", "opened", "resolved", "summary"])


def cmd_incidents(args: argparse.Namespace) -> int:
    loc = locate(args.config)
    loc.require()
    items = fetch_json(loc, "/incidents")
    if not isinstance(items, list):
        items = [incident_json(i) for i in open_store(loc).incidents(limit=args.limit)]
    if args.open:
        items = [i for i in items if i["state"] == "open"]
    if args.target:
        items = [i for i in items if i["target"] == args.target]
    if args.since:
        items = [i for i in items if (i.get("opened_at") or 0) >= time.time() - args.since]
    items = items[: args.limit]
    if args.json:
        emit_json(items)
    else:
        print(incident_table(items, args.wide) if items else "no incidents")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    st = open_store(locate(args.config))
    items = [attempt_json(a) for a in st.attempts(target=args.target, limit=args.limit)]
    if args.since:
        items = [a for a in items if (a.get("started_at") or 0) >= time.time() - args.since]
    if args.json:
        emit_json(items)
        return EXIT_OK
    w = 10_000 if args.wide else 60
    rows = [[str(a["id"]), ts(a["started_at"]), a["target"], str(a["incident_id"]), a["policy"], f"{a['step']}",
             a["action"], str(a["outcome"] or a["phase"]), ellipsize(str(a["reason"]), w)] for a in items]
    print(table(rows, ["id", "started", "target", "incident", "policy", "step", "action", "outcome", "reason"])
          if rows else "no remediation attempts")
    return EXIT_OK


# ---------------------------------------------------------------------- silences
def did_you_mean(what: str, value: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {value!r}: {hint}(known: {', '.join(known) or 'none'})"


def known_kinds(loc: Located) -> list[str]:
    """Every kind the watchdog opens, plus those the config maps alerts to and those already seen."""
    kinds = {k.value for k in IncidentKind}
    cfg = loc.require()
    kinds.update(cfg.http.alertmanager.kinds.values())
    if loc.db is not None and loc.db.exists():
        kinds.update(i.kind for i in open_store(loc).incidents(limit=500))
    return sorted(kinds)


def cmd_silence(args: argparse.Namespace) -> int:
    loc = locate(args.config)
    cfg = loc.require()
    now = time.time()
    if args.silence_cmd == "list":
        items = open_store(loc).silences(now) if loc.db is not None and loc.db.exists() else []
        if args.json:
            emit_json([{"id": s.id, "target": s.target, "kind": s.kind, "reason": s.reason,
                        "expires_at": s.expires_at, "created_by": s.created_by} for s in items])
            return EXIT_OK
        rows = [[str(s.id), s.target, s.kind or "*", ts(s.expires_at), ellipsize(s.reason, 60)] for s in items]
        print(table(rows, ["id", "target", "kind", "until", "reason"]) if rows else "no active silences")
        return EXIT_OK
    if args.silence_cmd == "add":
        targets = [t.name for t in cfg.targets]
        if args.target != "*" and args.target not in targets:
            raise CliError(did_you_mean("target", args.target, ["*", *targets]), EXIT_USAGE)
        if args.kind and args.kind not in (kinds := known_kinds(loc)):
            raise CliError(did_you_mean("kind", args.kind, kinds), EXIT_USAGE)
        st = open_store(loc, readonly=False)
        sid = st.add_silence(target=args.target, kind=args.kind, reason=args.reason, now=now,
                             duration_s=args.duration, created_by=os.environ.get("USER", ""))
        print(f"silence #{sid}: {args.target}{' ' + args.kind if args.kind else ''} for "
              f"{format_duration(args.duration)}, until {ts(now + args.duration)}")
        return EXIT_OK
    ok = open_store(loc, readonly=False).remove_silence(args.id)
    print(f"silence #{args.id} removed" if ok else f"no silence #{args.id}")
    return EXIT_OK if ok else EXIT_ATTENTION


# ---------------------------------------------------------------------- outbox
def cmd_outbox(args: argparse.Namespace) -> int:
    loc = locate(args.config)
    if args.outbox_cmd == "list":
        rows = open_store(loc).outbox_rows(state=args.state, limit=args.limit)
        if args.json:
            emit_json([{"id": r.id, "receiver": r.receiver, "incident": r.incident_id, "event": r.event,
                        "state": r.state, "attempts": r.attempts, "next_at": r.next_at, "sent_at": r.sent_at,
                        "last_error": r.last_error} for r in rows])
            return EXIT_OK
        print(table([[str(r.id), r.receiver, str(r.incident_id), r.event, r.state, str(r.attempts),
                      ts(r.next_at) if r.state == "pending" else ts(r.sent_at), ellipsize(r.last_error, 50)]
                     for r in rows], ["id", "receiver", "incident", "event", "state", "tries", "next/sent", "error"])
              if rows else "outbox is empty")
        return EXIT_OK
    st = open_store(loc, readonly=False)
    if args.outbox_cmd == "retry":
        print(f"{st.outbox_retry(args.ids or None, time.time())} deliveries queued again")
    else:
        print(f"{st.outbox_drop(args.ids)} deliveries dropped")
    return EXIT_OK


# ---------------------------------------------------------------------- parsers
def add_parsers(sub: Any, parents: list[argparse.ArgumentParser], js: argparse.ArgumentParser) -> None:
    """Register status, incidents, history, silence and outbox (each with --config; reads with --json)."""
    p = sub.add_parser("status", parents=[*parents, js], help="is the daemon running and healthy (exit 0/1/3/4)",
                       description="Exit 0: running, nothing P0/P1 open. 1: running with an open P0/P1 or a "
                       "degraded loop/state. 3: not running. 4: unknown (no usable config).")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("incidents", parents=[*parents, js], help="list incidents (newest first)")
    p.add_argument("--open", action="store_true", help="only open incidents")
    p.add_argument("--target", help="only this target")
    p.add_argument("--since", type=duration_arg, metavar="DURATION", help="opened within this long (e.g. 90m, 1h30m)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--wide", action="store_true", help="do not cut summaries")
    p.set_defaults(func=cmd_incidents)
    p = sub.add_parser("history", parents=[*parents, js], help="remediation attempts with outcomes")
    p.add_argument("--target", help="only this target")
    p.add_argument("--since", type=duration_arg, metavar="DURATION", help="started within this long (e.g. 1d)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--wide", action="store_true", help="do not cut reasons")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("silence", parents=parents, help="maintenance silences (stored durably)")
    ss = p.add_subparsers(dest="silence_cmd", required=True, metavar="{add,list,rm}")
    a = ss.add_parser("add", parents=parents, help="silence a target: no actions, no notifications but resolves")
    a.add_argument("target", help="target name, or * for all")
    a.add_argument("--for", dest="duration", type=duration_arg, default=3600.0, metavar="DURATION",
                   help="how long (e.g. 90s, 30m, 1h30m, 2d; default 1h)")
    a.add_argument("--reason", required=True, help="why (shown in status and notifications)")
    a.add_argument("--kind", help="only this incident kind (default: every kind)")
    ss.add_parser("list", parents=[*parents, js], help="active silences")
    r = ss.add_parser("rm", parents=parents, help="remove a silence")
    r.add_argument("id", type=int, help="silence id (from `silence list`)")
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("outbox", parents=parents, help="the notification outbox")
    so = p.add_subparsers(dest="outbox_cmd", required=True, metavar="{list,retry,drop}")
    lo = so.add_parser("list", parents=[*parents, js], help="deliveries, newest first")
    lo.add_argument("--state", choices=["pending", "sent", "dead", "dropped"], help="only rows in this state")
    lo.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    rt = so.add_parser("retry", parents=parents, help="queue dead deliveries again (all dead ones without ids)")
    rt.add_argument("ids", nargs="*", type=int, help="outbox row ids")
    dr = so.add_parser("drop", parents=parents, help="never deliver these rows")
    dr.add_argument("ids", nargs="+", type=int, help="outbox row ids")
    p.set_defaults(func=cmd_outbox)


__all__ = ["add_parsers", "cmd_incidents", "cmd_status", "did_you_mean", "incident_table", "status_doc"]
