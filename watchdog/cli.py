"""Command line: `vllm-watchdog run|check|status|incidents|history|explain|silence|outbox|emulate|demo|install`.
Stage: operator interface.

Read-only commands ask the running daemon's HTTP endpoint first and fall back to the state database when
the daemon is down. Exit codes: 0 ok, 2 invalid config/policies (every problem printed as
`file:line: field: what is wrong (what would be right)`), 1 other errors. Never prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from watchdog import __version__, logs_cli
from watchdog.errors import ConfigError, Problem
from watchdog.fleet import cli as fleet_cli

DEFAULT_CONFIG = os.environ.get("VLLM_WATCHDOG_CONFIG", "/etc/vllm-watchdog/watchdog.yaml")
REPO_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"
PKG_POLICY = Path(__file__).resolve().parent / "data" / "default_policy.yaml"


def default_policy_files() -> list[Path]:
    return [REPO_POLICY if REPO_POLICY.exists() else PKG_POLICY]


def load_all(config: str) -> tuple[Any, Any]:
    """Config + policies + cross references, or ConfigError with every problem."""
    from watchdog.config import load_file
    from watchdog.remediation.policy import cross_check, load_policies

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
    try:
        from watchdog.notify.receivers import check_notify

        problems.extend(check_notify(cfg, config))
    except ImportError:
        pass
    try:
        from watchdog.extras import check_extras

        problems.extend(check_extras(cfg, config))
    except ImportError:
        pass
    if problems:
        raise ConfigError(problems)
    return cfg, ps


def _print_problems(e: ConfigError) -> int:
    for p in sorted(e.problems, key=lambda p: (p.file, p.line or 0)):
        print(str(p), file=sys.stderr)
    print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from watchdog.daemon import Daemon
    from watchdog.logging_setup import setup_logging

    try:
        cfg, ps = load_all(args.config)
    except ConfigError as e:
        return _print_problems(e)
    setup_logging(args.log_format or cfg.logging.format, cfg.logging.level)

    async def main() -> None:
        d = Daemon(cfg, ps, config_path=Path(args.config))
        await d.run_forever(lambda: load_all(args.config))

    asyncio.run(main())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg, ps = load_all(args.config)
    except ConfigError as e:
        return _print_problems(e)
    for w in ps.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{args.config}: ok — {len(cfg.targets)} target(s), {len(ps.policies)} polic(ies) from "
          f"{', '.join(ps.files)}, {len(cfg.notify.receivers)} receiver(s)")
    return 0


# ---------------------------------------------------------------------- read-only commands
def _endpoint(cfg_path: str) -> tuple[str | None, Path | None]:
    try:
        from watchdog.config import load_file

        cfg = load_file(cfg_path)
    except ConfigError:
        return None, None
    port = cfg.http.port
    if port == 0:  # an ephemeral port: the running daemon wrote the one it bound
        try:
            port = int((cfg.state_dir / "http.port").read_text().strip())
        except (OSError, ValueError):
            return None, cfg.state_dir / "state.db"
    url = f"http://{cfg.http.listen}:{port}" if cfg.http.enabled else None
    return url, cfg.state_dir / "state.db"


def _get(url: str | None, path: str) -> Any | None:
    if url is None:
        return None
    import httpx

    try:
        r = httpx.get(url + path, timeout=2.0, trust_env=False)
        return r.json()
    except (httpx.HTTPError, ValueError):
        return None


def _store(db: Path | None) -> Any:
    from watchdog.store import Store

    if db is None or not db.exists():
        raise SystemExit(f"no state database at {db}: is state_dir right, and has the daemon ever run?")
    return Store(db, readonly=True)


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def cmd_status(args: argparse.Namespace) -> int:
    url, db = _endpoint(args.config)
    doc = _get(url, "/status")
    source = "daemon"
    if doc is None:
        from watchdog.views import incident_json

        st = _store(db)
        doc = {"healthy": None, "reason": "daemon not reachable: read from the state database",
               "open_incidents": [incident_json(i) for i in st.open_incidents()],
               "outbox": {f"{r}:{s}": n for (r, s), n in st.outbox_counts().items()}, "targets": {}}
        source = "state database"
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
        return 0
    print(f"source: {source}; healthy: {doc.get('healthy')} ({doc.get('reason')})")
    rows = [[n, str(t.get("runtime")), " ".join(f"{k}={v}" for k, v in t.get("probes", {}).items()),
             str(t.get("open_incidents")), "yes" if t.get("remediating") else "no"]
            for n, t in doc.get("targets", {}).items()]
    if rows:
        print(_table(rows, ["target", "runtime", "probes", "open", "remediating"]))
    inc = doc.get("open_incidents", [])
    print(f"\nopen incidents: {len(inc)}")
    if inc:
        print(_incident_table(inc))
    return 0


def _incident_table(items: list[dict[str, Any]]) -> str:
    rows = [[str(i["id"]), i["severity"], i["state"], i["target"], i["kind"], _ts(i["opened_at"]),
             _ts(i.get("resolved_at")), str(i["summary"])[:70]] for i in items]
    return _table(rows, ["id", "sev", "state", "target", "kind", "opened", "resolved", "summary"])


def cmd_incidents(args: argparse.Namespace) -> int:
    url, db = _endpoint(args.config)
    items = _get(url, "/incidents")
    if items is None:
        from watchdog.views import incident_json

        items = [incident_json(i) for i in _store(db).incidents(limit=args.limit)]
    if args.open:
        items = [i for i in items if i["state"] == "open"]
    if args.json:
        print(json.dumps(items, indent=1, default=str))
    else:
        print(_incident_table(items) if items else "no incidents")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from watchdog.views import attempt_json

    _, db = _endpoint(args.config)
    st = _store(db)
    items = [attempt_json(a) for a in st.attempts(target=args.target, limit=args.limit)]
    if args.json:
        print(json.dumps(items, indent=1, default=str))
        return 0
    rows = [[str(a["id"]), _ts(a["started_at"]), a["target"], str(a["incident_id"]), a["policy"],
             f"{a['step']}", a["action"], str(a["outcome"] or a["phase"]), str(a["reason"])[:60]] for a in items]
    print(_table(rows, ["id", "started", "target", "incident", "policy", "step", "action", "outcome", "reason"])
          if rows else "no remediation attempts")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from watchdog.views import attempt_json, incident_json

    _, db = _endpoint(args.config)
    st = _store(db)
    inc = st.incident(args.incident)
    if inc is None:
        print(f"no incident #{args.incident}", file=sys.stderr)
        return 1
    doc = incident_json(inc)
    doc["history"] = st.events(inc.id)
    doc["attempts"] = [attempt_json(a) for a in st.attempts(incident_id=inc.id)]
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
        return 0
    print(f"incident #{inc.id} [{inc.severity.value}] {inc.target} {inc.kind} — {inc.state.value}")
    print(f"  {inc.summary}")
    if inc.remedy:
        print(f"  recommended remedy: {inc.remedy}")
    print("\nwhat happened and why:")
    for ev in doc["history"]:
        d = ev["detail"]
        if ev["event"] == "verdict":
            verb = "skipped" if d.get("reason") == "STEP_SKIPPED" else "ran" if d.get("allowed") else "did not run"
            line = f"policy {d.get('policy')} step {int(d.get('step', 0)) + 1} {verb}: {d.get('reason')}"
            if d.get("detail"):
                line += f" — {d['detail']}"
            if d.get("ladder"):
                line += f" [ladder: {d['ladder']}]"
        else:
            line = ev["event"] + (": " + ", ".join(f"{k}={v}" for k, v in d.items()) if d else "")
        print(f"  {_ts(ev['at'])}  {line}")
    if not any(ev["event"] == "verdict" for ev in doc["history"]):
        print("  no remediation verdict yet: nothing ran (the daemon has not evaluated this incident; "
              "`vllm-watchdog status` says whether it runs)")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    from watchdog.config import load_file
    from watchdog.store import Store

    cfg = load_file(args.config)
    st = Store(cfg.state_dir / "state.db")
    now = time.time()
    if args.silence_cmd == "add":
        dur = parse_duration(args.duration)
        sid = st.add_silence(target=args.target, kind=args.kind, reason=args.reason, now=now, duration_s=dur,
                             created_by=os.environ.get("USER", ""))
        print(f"silence #{sid}: {args.target}{' ' + args.kind if args.kind else ''} until {_ts(now + dur)}")
    elif args.silence_cmd == "list":
        rows = [[str(s.id), s.target, s.kind or "*", _ts(s.expires_at), s.reason] for s in st.silences(now)]
        print(_table(rows, ["id", "target", "kind", "until", "reason"]) if rows else "no active silences")
    else:
        ok = st.remove_silence(args.id)
        print(f"silence #{args.id} removed" if ok else f"no silence #{args.id}")
        return 0 if ok else 1
    return 0


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t)
    except ValueError:
        raise SystemExit(f"--for {text!r}: use a number with s, m, h or d (e.g. 30m, 1h)") from None


def cmd_outbox(args: argparse.Namespace) -> int:
    from watchdog.config import load_file
    from watchdog.store import Store

    cfg = load_file(args.config)
    st = Store(cfg.state_dir / "state.db")
    if args.outbox_cmd == "list":
        rows = st.outbox_rows(state=args.state, limit=args.limit)
        if args.json:
            print(json.dumps([{"id": r.id, "receiver": r.receiver, "incident": r.incident_id, "event": r.event,
                               "state": r.state, "attempts": r.attempts, "last_error": r.last_error}
                              for r in rows], indent=1))
            return 0
        print(_table([[str(r.id), r.receiver, str(r.incident_id), r.event, r.state, str(r.attempts),
                       _ts(r.next_at) if r.state == "pending" else _ts(r.sent_at), r.last_error[:50]]
                      for r in rows], ["id", "receiver", "incident", "event", "state", "tries", "next/sent", "error"])
              if rows else "outbox is empty")
    elif args.outbox_cmd == "retry":
        n = st.outbox_retry(args.ids or None, time.time())
        print(f"{n} deliveries queued again")
    else:
        n = st.outbox_drop(args.ids)
        print(f"{n} deliveries dropped")
    return 0


def cmd_emulate(args: argparse.Namespace, rest: list[str]) -> int:
    import watchdog.emulator as emulator

    return int(emulator.main(rest))


def cmd_demo(args: argparse.Namespace) -> int:
    from watchdog.demo import main as demo_main

    return demo_main(fast=args.fast)


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vllm-watchdog", description="Self-healing watchdog for vLLM servers")
    ap.add_argument("--version", action="version", version=f"vllm-watchdog {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return p

    p = with_config(sub.add_parser("run", help="run the daemon"))
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    with_config(sub.add_parser("check", help="validate config and policies"))
    p = with_config(sub.add_parser("status", help="the daemon's view: targets, probes, open incidents"))
    p.add_argument("--json", action="store_true")
    p = with_config(sub.add_parser("incidents", help="list incidents"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--open", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p = with_config(sub.add_parser("history", help="remediation attempts with outcomes"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--target")
    p.add_argument("--limit", type=int, default=50)
    p = with_config(sub.add_parser("explain", help="why each remediation step did or did not run"))
    p.add_argument("incident", type=int)
    p.add_argument("--json", action="store_true")
    p = with_config(sub.add_parser("silence", help="maintenance silences (stored durably)"))
    ss = p.add_subparsers(dest="silence_cmd", required=True)
    a = ss.add_parser("add", help="silence a target (no actions, no notifications except resolves)")
    a.add_argument("target", help="target name, or * for all")
    a.add_argument("--for", dest="duration", default="1h")
    a.add_argument("--reason", required=True)
    a.add_argument("--kind", help="only this incident kind")
    ss.add_parser("list")
    r = ss.add_parser("rm")
    r.add_argument("id", type=int)
    p = with_config(sub.add_parser("outbox", help="the notification outbox"))
    so = p.add_subparsers(dest="outbox_cmd", required=True)
    lo = so.add_parser("list")
    lo.add_argument("--state", choices=["pending", "sent", "dead", "dropped"])
    lo.add_argument("--limit", type=int, default=50)
    lo.add_argument("--json", action="store_true")
    rt = so.add_parser("retry", help="queue dead deliveries again (all dead ones without ids)")
    rt.add_argument("ids", nargs="*", type=int)
    dr = so.add_parser("drop")
    dr.add_argument("ids", nargs="+", type=int)
    sub.add_parser("emulate", help="run the vLLM emulator (options after 'emulate' go to it)", add_help=False)
    fleet_cli.add_parser(sub)
    p = sub.add_parser("demo", help="live demonstration against the emulator")
    p.add_argument("--fast", action="store_true", help="shorter timings")
    logs_cli.add_parser(sub)
    try:
        from watchdog.install import add_install_parser

        add_install_parser(sub)
    except ImportError:
        pass
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulate"]:
        import watchdog.emulator as emulator

        return int(emulator.main(argv[1:]))
    ap = build_parser()
    args = ap.parse_args(argv)
    cmds = {"run": cmd_run, "check": cmd_check, "status": cmd_status, "incidents": cmd_incidents,
            "history": cmd_history, "explain": cmd_explain, "silence": cmd_silence, "outbox": cmd_outbox,
            "demo": cmd_demo, "logs": logs_cli.run}
    cmds["fleet"] = fleet_cli.run
    if args.cmd == "install":
        from watchdog.install import run_install

        return int(run_install(args))
    return int(cmds[args.cmd](args))


if __name__ == "__main__":
    sys.exit(main())
