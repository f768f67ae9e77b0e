"""`vllm-watchdog fleet status [--json]`: every host, target, health, open incident and held slot of the
group, from one linearizable etcd read. Stage: CLI (read-only).

Reads only the `fleet:` section of the config file (relative TLS paths resolve against the file), or
`--endpoints`/`--group` given on the command line. It must never write to etcd, take a slot, or print a
key file's content. Exit codes: 0 shown, 2 bad config or arguments, 3 etcd has no quorum for us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from watchdog.adapters.etcd import EtcdKV
from watchdog.errors import CoordinatorUnavailable
from watchdog.fleet.coordinator import read_status
from watchdog.fleet.settings import FleetSettings

DEFAULT_CONFIG = os.environ.get("VLLM_WATCHDOG_CONFIG", "/etc/vllm-watchdog/watchdog.yaml")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `fleet status` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("fleet", help="the fleet group on etcd (all hosts)")
    sub = p.add_subparsers(dest="fleet_cmd", required=True)
    st = sub.add_parser("status", help="every host, target, health, open incident and held slot of the group")
    st.add_argument("--config", "-c", default=argparse.SUPPRESS,  # the top parser's default: -c before or after
                    help=f"config file (default {DEFAULT_CONFIG})")
    st.add_argument("--endpoints", help="comma-separated etcd URLs (instead of the config's fleet.etcd)")
    st.add_argument("--group", help="the group to show (instead of the config's fleet.group)")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def load_settings(args: argparse.Namespace) -> FleetSettings:
    """The `fleet:` section of the config file, with command-line overrides. Raises ValueError."""
    doc: dict[str, Any] = {}
    base = Path(".")
    if not (args.endpoints and args.group):
        path = Path(args.config)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read config: {e.__class__.__name__}") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("fleet"), dict):
            raise ValueError(f"{path}: no 'fleet:' section")
        doc = dict(raw["fleet"])
        base = path.parent
    if args.endpoints:
        doc["etcd"] = {**(doc.get("etcd") or {}), "endpoints": [u.strip() for u in args.endpoints.split(",")]}
    if args.group:
        doc["group"] = args.group
    etcd = dict(doc.get("etcd") or {})
    for k in ("ca_file", "cert_file", "key_file"):
        if etcd.get(k) and not Path(str(etcd[k])).is_absolute():
            etcd[k] = str(base / str(etcd[k]))
    doc["etcd"] = etcd
    try:
        return FleetSettings.model_validate(doc)
    except ValidationError as e:
        lines = [f"fleet.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ValueError("\n".join(lines)) from None


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `fleet status`; returns the exit code."""
    out = out or sys.stdout
    try:
        s = load_settings(args)
    except ValueError as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 2
    try:
        doc = asyncio.run(_status(s))
    except CoordinatorUnavailable as e:
        print(f"fleet: etcd has no quorum for us: {e}", file=sys.stderr)
        return 3
    if args.json:
        json.dump(doc, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(render(doc, time.time()))
    return 0


async def _status(s: FleetSettings) -> dict[str, Any]:
    e = s.etcd
    kv = EtcdKV(e.endpoints, ca_file=str(e.ca_file) if e.ca_file else None,
                cert_file=str(e.cert_file) if e.cert_file else None,
                key_file=str(e.key_file) if e.key_file else None, timeout_s=e.timeout_s)
    try:
        return await read_status(s, kv)
    finally:
        await kv.close()


def render(doc: dict[str, Any], now: float) -> str:
    """The human table of `fleet status`."""
    br = doc["breaker"]
    breaker = (f"OPEN since {_ago(now, br['since'])} (opened by {br['opened_by']})" if br else "closed")
    lines = [f"group {doc['group']}: {doc['targets']} targets, {doc['unhealthy']} unhealthy; "
             f"slots {len(doc['slots'])}/{doc['slot_limit']} held; breaker {breaker} "
             f"(trips above {doc['breaker_percent']:g}%)"]
    rows = [("HOST", "TARGET", "HEALTH", "STATUS", "SINCE", "OPEN INCIDENTS")]
    for h in doc["hosts"]:
        for t in h["targets"]:
            incs = ", ".join(f"#{i['id']} {i['kind']} {i['severity']}" for i in t["incidents"]) or "-"
            rows.append((h["host"], t["target"], "ok" if t["healthy"] else "DOWN", t["status"],
                         _ago(now, t["updated_at"]), incs))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
    if not doc["hosts"]:
        lines.append("(no host has registered in this group)")
    for sl in doc["slots"]:
        inc = f" incident {sl['incident_id']}" if sl["incident_id"] is not None else ""
        lines.append(f"slot {sl['slot']}: {sl['host']}/{sl['target']} {sl['action']}{inc}, "
                     f"held for {_ago(now, sl['since'])}")
    return "\n".join(lines) + "\n"


def _ago(now: float, then: float) -> str:
    s = max(0, int(now - then))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"
