"""`vllm-watchdog logs classify [PATH|-] [--json] [--source auto|docker|journal|kernel]`: what the daemon
would find in a saved log (a `docker logs` dump, a `journalctl -o json` export, a kernel log). Stage:
operator interface.

It uses exactly the daemon's pieces: the shipped pattern catalog through `LogDetector` (echo-aware,
anchored, one finding per start-up/crash window naming the root cause, the other lines as its
evidence), the Xid table through `KernelDetector`, and the runtime/kernel readers' parsers
(`parse_journal_json`, `parse_kernel_text`). A saved log that spans restarts is cut at vLLM's start-up
banner, where the daemon would have reset the detector after its restart. Exit status: 0 whatever was
found, 2 when the input (or an override catalog) cannot be read. Never acts, never writes files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from watchdog.adapters.kernel_log import parse_kernel_text, parse_kmsg_record
from watchdog.adapters.systemd import parse_journal_json
from watchdog.detectors.kernel import KernelDetector
from watchdog.detectors.logs import LogCatalog, LogDetector
from watchdog.errors import ConfigError
from watchdog.model import Finding, LogLine
from watchdog.textsafe import safe_json, safe_text

_DOCKER_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) ")
# vLLM's start-up banner (0.6.x … 0.33): a new server process, where the daemon resets its detector
_STARTUP_BANNER = re.compile(r"vLLM API server version \S+|Starting vLLM API server|Starting vLLM server on")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `logs classify` on the top-level sub-command set."""
    p: argparse.ArgumentParser = subparsers.add_parser("logs", help="classify saved vLLM / kernel logs")
    sub = p.add_subparsers(dest="logs_cmd", required=True)
    c = sub.add_parser("classify", help="print what the daemon would find in a saved log")
    c.add_argument("path", nargs="?", default="-", help="log file, or - for standard input (default)")
    c.add_argument("--json", action="store_true", help="one JSON object per finding")
    c.add_argument("--source", choices=["auto", "docker", "journal", "kernel"], default="auto",
                   help="how to read the file (auto: guessed from its first line)")
    c.add_argument("--catalog", type=Path, default=None, help="an override pattern file, as in the config")
    c.add_argument("--target", default="vllm", help="target name shown in the findings")
    return p


def _read(path: str) -> str:
    if path == "-":
        buf = getattr(sys.stdin, "buffer", None)  # bytes: a log with broken UTF-8 is still read
        return buf.read().decode("utf-8", "replace") if buf is not None else sys.stdin.read()
    return Path(path).read_text(encoding="utf-8", errors="replace")


def guess_source(text: str) -> str:
    """journal for a JSON export, kernel for a /dev/kmsg dump, else docker."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if first.startswith("{"):
        return "journal"
    if parse_kmsg_record(first) is not None:
        return "kernel"
    return "docker"


def _docker_line(raw: str) -> LogLine:
    m = _DOCKER_TS.match(raw)
    if m is None:
        return LogLine(raw)
    stamp = m.group(1) + (m.group(2) or "")[:7] + ("+00:00" if m.group(3) == "Z" else m.group(3))
    try:
        at: float | None = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        at = None
    return LogLine(raw[m.end():], at)


def read_lines(text: str, source: str) -> list[tuple[int, LogLine]]:
    """(1-based line number, LogLine) for every line of a saved log."""
    out: list[tuple[int, LogLine]] = []
    for no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if source == "journal":
            out.extend((no, ln) for _c, ln in parse_journal_json(raw))
        elif source == "kernel":
            out.extend((no, ln) for ln in parse_kernel_text(raw))
        else:
            out.append((no, _docker_line(raw)))
    return out


def classify(numbered: Sequence[tuple[int, LogLine]], catalog: LogCatalog, target: str) -> list[dict[str, Any]]:
    """Every finding of the saved log, as printable records, in line order."""
    logs = LogDetector(catalog, target)
    kernel = KernelDetector()
    records: list[dict[str, Any]] = []
    segments: list[list[tuple[int, LogLine]]] = [[]]
    for item in numbered:
        if _STARTUP_BANNER.search(item[1].text) and segments[-1]:
            segments.append([])
        segments[-1].append(item)
    for seg in segments:
        logs.reset()
        lines = [ln for _no, ln in seg]
        found: list[Finding] = logs.observe_lines(lines, 0.0) + kernel.observe_lines(lines, 0.0)
        records.extend(_record(f, seg) for f in found)
    return sorted(records, key=lambda r: int(r["line"]))


def _record(f: Finding, seg: Sequence[tuple[int, LogLine]]) -> dict[str, Any]:
    ev = f.evidence
    idx = int(ev.get("line_index", 0))
    rec: dict[str, Any] = {
        "class": ev.get("class"), "kind": f.kind, "severity": f.severity.value, "line": seg[idx][0],
        "text": seg[idx][1].text, "target": f.target, "restart_helps": ev.get("restart_helps"),
        "remedy": f.remedy,
    }
    if "xid" in ev:
        rec["xid"] = ev["xid"]
        rec["pci_bus_id"] = ev.get("pci_bus_id")
    riders = ev.get("evidence_lines") or []
    rec["evidence"] = [{"class": r["class"], "line": seg[int(r["line_index"])][0], "text": r["line"]}
                       for r in riders if isinstance(r, dict)]
    return rec


def run(args: argparse.Namespace) -> int:
    """The `logs classify` command; 0 unless the input cannot be read (2)."""
    try:
        text = _read(args.path)
    except OSError as e:
        print(f"vllm-watchdog logs classify: cannot read {args.path}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        catalog = LogCatalog.load(getattr(args, "catalog", None))
    except ConfigError as e:
        print(f"vllm-watchdog logs classify: {e}", file=sys.stderr)
        return 2
    source = args.source if args.source != "auto" else guess_source(text)
    records = classify(read_lines(text, source), catalog, getattr(args, "target", "vllm"))
    for r in records:
        if args.json:
            print(safe_json(json.dumps(r, ensure_ascii=False, sort_keys=True)))
            continue
        print(f"{r['line']:>6}  {r['severity']}  {r['kind']:<18} {r['class']:<22} {safe_text(r['text'][:200])}")
        for ev in r["evidence"]:
            print(f"{'':>6}    + line {ev['line']} ({ev['class']}): {safe_text(ev['text'][:160])}")
    if not args.json:
        print(f"{len(records)} finding(s) in {len(text.splitlines())} lines (source: {source})")
    return 0


__all__ = ["add_parser", "classify", "guess_source", "read_lines", "run"]
