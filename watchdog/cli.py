"""Command line: `vllm-watchdog run|check|doctor|status|incidents|history|explain|silence|outbox|notify|routes|
logs|fleet|emulate|demo|install|completion`. Stage: operator interface (composition: it may import anything).

This module holds the parser, the dispatch and the verbs `run`, `check` and `explain`; the other verbs live
in `cli_read` (state), `cli_ops` (notify/routes tests, completion) and `doctor`. Conventions every verb
follows: `--config/-c` before or after the verb, `--json` on every read verb, help on every option, one
duration syntax (`90s`, `1h30m`), text cut with `…`, colour only on a terminal without NO_COLOR, and a
quiet exit (141) when stdout is a closed pipe. Exit codes: 0 ok, 1 attention/failure, 2 invalid
config/arguments (every problem printed as `file:line: field: what is wrong (what would be right)`),
`status`: 3 not running, 4 unknown. Never prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from watchdog import __version__, cli_ops, cli_read, doctor, logs_cli, preflight
from watchdog import emulator as emulator
from watchdog.adapters.instance_lock import AnotherInstance, InstanceLock
from watchdog.cli_common import (
    DEFAULT_CONFIG,
    EXIT_BROKEN_PIPE,
    CliError,
    config_parent,
    emit_json,
    json_parent,
    locate,
    open_store,
    ts,
)
from watchdog.daemon import Daemon
from watchdog.demo import main as demo_main
from watchdog.errors import ConfigError, WatchdogError
from watchdog.fleet import cli as fleet_cli
from watchdog.install import add_install_parser, run_install
from watchdog.loading import PKG_POLICY, REPO_POLICY, default_policy_files, load_all
from watchdog.logging_setup import setup_logging
from watchdog.textsafe import safe_text
from watchdog.views import attempt_json, incident_json


def _print_problems(e: ConfigError) -> int:
    for p in sorted(e.problems, key=lambda p: (p.file, p.line or 0)):
        print(str(p), file=sys.stderr)
    print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg, ps = load_all(args.config)
    except ConfigError as e:
        return _print_problems(e)
    lock = InstanceLock(cfg.state_dir)
    try:  # first: a twin must not even probe the port or the state dir of the running daemon
        lock.acquire()
    except AnotherInstance as e:
        print(f"vllm-watchdog: {e}", file=sys.stderr)
        return 2
    except OSError:
        pass  # an unusable state dir: preflight says what is wrong with it
    live = preflight.live_problems(cfg, args.config, ps.policies)  # what check --live reports: refuse first
    if live:
        return _print_problems(ConfigError(live))
    setup_logging(args.log_format or cfg.logging.format, cfg.logging.level)

    async def main() -> None:
        d = Daemon(cfg, ps, config_path=Path(args.config), instance_lock=lock)
        await d.run_forever(lambda: load_all(args.config))

    try:
        asyncio.run(main())
    except ConfigError as e:  # a problem preflight could not see (a secret removed since): still no traceback
        return _print_problems(ConfigError(preflight.locate(e.problems, cfg, args.config)))
    except WatchdogError as e:  # a start-up refusal that appeared after preflight (exposure, TLS files)
        print(f"vllm-watchdog: {e}", file=sys.stderr)
        return 2
    return 0


def _problems_json(e: ConfigError) -> int:
    emit_json({"ok": False, "problems": [{"file": p.file, "line": p.line, "field": p.field, "message": p.message,
                                           "fix": p.fix} for p in e.problems]})
    return 2


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg, ps = load_all(args.config)
    except ConfigError as e:
        return _problems_json(e) if args.json else _print_problems(e)
    if getattr(args, "live", False):
        live = preflight.check_live(cfg, args.config, ps.policies)
        if live:
            return _problems_json(ConfigError(live)) if args.json else _print_problems(ConfigError(live))
    if args.json:
        emit_json({"ok": True, "config": args.config, "targets": [t.name for t in cfg.targets],
                   "policies": [p.name for p in ps.policies], "policy_files": list(ps.files),
                   "receivers": [r.name or r.type for r in cfg.notify.receivers],
                   "warnings": [str(w) for w in ps.warnings]})
        return 0
    for w in ps.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{args.config}: ok — {len(cfg.targets)} target(s), {len(ps.policies)} polic(ies) from "
          f"{', '.join(ps.files)}, {len(cfg.notify.receivers)} receiver(s)")
    return 0


# ---------------------------------------------------------------------- explain
def cmd_explain(args: argparse.Namespace) -> int:
    st = open_store(locate(args.config))
    inc = st.incident(args.incident)
    if inc is None:
        print(f"no incident #{args.incident}", file=sys.stderr)
        return 1
    doc = incident_json(inc)
    doc["history"] = st.events(inc.id)
    doc["attempts"] = [attempt_json(a) for a in st.attempts(incident_id=inc.id)]
    if args.json:
        emit_json(doc)
        return 0
    print(f"incident #{inc.id} [{inc.severity.value}] {inc.target} {inc.kind} — {inc.state.value}")
    print(f"  {safe_text(inc.summary)}")
    if inc.remedy:
        print(f"  recommended remedy: {safe_text(inc.remedy)}")
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
        print(f"  {ts(ev['at'])}  {safe_text(line)}")
    if not any(ev["event"] == "verdict" for ev in doc["history"]):
        print("  no remediation verdict yet: nothing ran (the daemon has not evaluated this incident; "
              "`vllm-watchdog status` says whether it runs)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo_main(fast=args.fast)


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vllm-watchdog", description="Self-healing watchdog for vLLM servers")
    ap.add_argument("--version", action="version", version=f"vllm-watchdog {__version__}")
    ap.add_argument("--config", "-c", default=DEFAULT_CONFIG, metavar="FILE",
                    help=f"config file, before or after the verb (default: $VLLM_WATCHDOG_CONFIG or {DEFAULT_CONFIG})")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    cp, js = [config_parent()], json_parent()

    p = sub.add_parser("run", parents=cp, help="run the daemon")
    p.add_argument("--log-format", choices=["auto", "json", "console"],
                   help="auto: journald prefixes under systemd, console on a TTY, else JSON (default: the config's)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", parents=[*cp, js], help="validate config and policies")
    p.add_argument("--live", action="store_true", help="also resolve secrets and files, and check the state "
                   "dir, the HTTP port and the runtime exactly as run will")
    p.set_defaults(func=cmd_check)
    doctor.add_parser(sub, cp, js)
    cli_read.add_parsers(sub, cp, js)
    p = sub.add_parser("explain", parents=[*cp, js], help="why each remediation step did or did not run")
    p.add_argument("incident", type=int, help="incident id (from `incidents`)")
    p.set_defaults(func=cmd_explain)
    cli_ops.add_parsers(sub, cp, js, ap)
    sub.add_parser("emulate", help="run the vLLM emulator (options after 'emulate' go to it)", add_help=False)
    fleet_cli.add_parser(sub).set_defaults(func=fleet_cli.run)
    p = sub.add_parser("demo", parents=cp, help="live demonstration against the emulator (its own config)")
    p.add_argument("--fast", action="store_true", help="shorter timings")
    p.set_defaults(func=cmd_demo)
    logs_cli.add_parser(sub).set_defaults(func=logs_cli.run)
    add_install_parser(sub)
    return ap


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`… --json | head -1`): no traceback, and no second error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulate"]:
        return int(emulator.main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        rc = int(run_install(args) if args.cmd == "install" else args.func(args))
        sys.stdout.flush()
        return rc
    except CliError as e:
        print(f"vllm-watchdog {args.cmd}: {e}", file=sys.stderr)
        return e.code
    except sqlite3.Error as e:  # e.g. locked past the busy timeout by the running daemon: say so, no traceback
        print(f"vllm-watchdog {args.cmd}: state database: {e} (try again)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130


__all__ = ["PKG_POLICY", "REPO_POLICY", "build_parser", "default_policy_files", "load_all", "main"]

if __name__ == "__main__":
    sys.exit(main())
