"""What every CLI verb shares: where the config and the daemon are, the `--config`/`--json` parent parsers,
the one duration parser, tables that cut with an ellipsis, JSON output, colour only where it belongs, and a
quiet exit on a closed pipe. Stage: operator interface.

It must never print a secret, never write to the state database and never start anything.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from watchdog.adapters.instance_lock import holder_pid
from watchdog.config import load_file
from watchdog.config.models import WatchdogConfig
from watchdog.errors import ConfigError
from watchdog.logging_setup import use_color
from watchdog.store import Store
from watchdog.textsafe import safe_json, safe_text

DEFAULT_CONFIG = os.environ.get("VLLM_WATCHDOG_CONFIG", "/etc/vllm-watchdog/watchdog.yaml")

EXIT_OK = 0
EXIT_ATTENTION = 1  # running, but a P0/P1 is open or the loop is degraded; or a verb's own failure
EXIT_USAGE = 2  # invalid config or arguments
EXIT_NOT_RUNNING = 3  # LSB `status`: the daemon is not running
EXIT_UNKNOWN = 4  # LSB `status`: cannot tell (no usable config)
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process killed by SIGPIPE


class CliError(Exception):
    """A message for the operator (no traceback) and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_ATTENTION) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- parents
def config_parent() -> argparse.ArgumentParser:
    """`--config/-c` for every sub-verb: SUPPRESS keeps a value given before the verb (the top parser owns
    the default), so `-c FILE status` and `status -c FILE` mean the same."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", "-c", default=argparse.SUPPRESS, metavar="FILE",
                   help=f"config file (default: $VLLM_WATCHDOG_CONFIG or {DEFAULT_CONFIG})")
    return p


def json_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON (stable keys) instead of text")
    return p


# ---------------------------------------------------------------------- durations
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `1h30m`, `2d`, `1.5h`, `250ms` → seconds. ValueError on anything else or on zero."""
    t = text.strip().lower().replace(" ", "")
    if not t:
        raise ValueError("empty duration")
    try:
        seconds = float(t)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(t):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or pos == 0:
            raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 1h30m, 2d)") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return seconds


def duration_arg(text: str) -> float:
    """argparse `type=` for every duration the CLI takes."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_duration(seconds: float) -> str:
    s = round(seconds)
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s")]
    return "".join(f"{n}{u}" for n, u in parts if n) or "0s"


# ---------------------------------------------------------------------- text output
def ellipsize(text: str, width: int) -> str:
    """One line of at most `width` characters; a cut says so with `…`."""
    one = " ".join(str(text).split())
    return one if len(one) <= width else one[: max(0, width - 1)] + "…"


def table(rows: list[list[str]], headers: list[str]) -> str:
    rows = [[safe_text(c) for c in r] for r in rows]  # cells carry target-supplied text: no escape sequences
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)


def ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def emit_json(doc: Any) -> None:
    print(safe_json(json.dumps(doc, indent=1, default=str, ensure_ascii=False)))  # no raw C1/bidi controls


class Paint:
    """ANSI styles for stdout, or plain text when stdout is not a terminal or NO_COLOR is set."""

    CODES = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "dim": "2"}

    def __init__(self, stream: Any = None) -> None:
        self.on = use_color(stream if stream is not None else sys.stdout)

    def __call__(self, style: str, text: str) -> str:
        return f"\033[{self.CODES[style]}m{text}\033[0m" if self.on else text


# ---------------------------------------------------------------------- where things are
def url_host(listen: str) -> str:
    """The host part of a URL that reaches `listen`: a wildcard becomes loopback, IPv6 gets brackets."""
    host = listen.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host  # a name


@dataclass
class Located:
    """The config (when it loads), the daemon's URL (when it serves HTTP), the state database path."""

    config_path: str
    cfg: WatchdogConfig | None
    problem: str | None
    url: str | None = None
    verify: Any = True
    db: Path | None = None

    @property
    def state_dir(self) -> Path | None:
        return self.cfg.state_dir if self.cfg is not None else None

    def require(self) -> WatchdogConfig:
        if self.cfg is None:
            raise CliError(self.problem or f"cannot read {self.config_path}", EXIT_USAGE)
        return self.cfg

    def daemon_pid(self) -> int | None:
        return holder_pid(self.cfg.state_dir) if self.cfg is not None else None


def no_config_message(path: str, e: Exception | None) -> str:
    if not Path(path).exists():
        return (f"no config file at {path}: pass --config FILE (before or after the verb) or set "
                "VLLM_WATCHDOG_CONFIG")
    if isinstance(e, ConfigError):
        first = e.problems[0] if e.problems else None
        more = f" (and {len(e.problems) - 1} more; `vllm-watchdog check -c {path}` lists them)" if (
            len(e.problems) > 1) else ""
        return f"{path} is not a valid config: {first}{more}"
    return f"cannot read {path}: {e}"


def locate(config_path: str) -> Located:
    try:
        cfg = load_file(config_path)
    except (ConfigError, OSError) as e:
        return Located(config_path, None, no_config_message(config_path, e))
    loc = Located(config_path, cfg, None, db=cfg.state_dir / "state.db")
    port = cfg.http.port
    if port == 0:  # an ephemeral port: the running daemon wrote the one it bound
        try:
            port = int((cfg.state_dir / "http.port").read_text().strip())
        except (OSError, ValueError):
            return loc
    if cfg.http.enabled:
        tls = cfg.http.tls.cert_file is not None
        loc.url = f"{'https' if tls else 'http'}://{url_host(cfg.http.listen)}:{port}"
        loc.verify = str(cfg.http.tls.cert_file) if tls else True  # its own (often self-signed) certificate
    return loc


def fetch_json(loc: Located, path: str, timeout_s: float = 2.0) -> Any | None:
    """GET `path` from the running daemon; None when it does not answer (or answers no JSON)."""
    if loc.url is None:
        return None
    try:
        r = httpx.get(loc.url + path, timeout=timeout_s, trust_env=False, verify=loc.verify)
        return r.json()
    except (httpx.HTTPError, ValueError, OSError):
        return None


def open_store(loc: Located, *, readonly: bool = True) -> Store:
    cfg = loc.require()
    db = cfg.state_dir / "state.db"
    if readonly and not db.exists():
        raise CliError(f"no state database in {cfg.state_dir} (state_dir of {loc.config_path}): the daemon has "
                       "never run with this config", EXIT_NOT_RUNNING)
    return Store(db, readonly=readonly)


__all__ = ["DEFAULT_CONFIG", "EXIT_ATTENTION", "EXIT_BROKEN_PIPE", "EXIT_NOT_RUNNING", "EXIT_OK", "EXIT_UNKNOWN",
           "EXIT_USAGE", "CliError", "Located", "Paint", "config_parent", "duration_arg", "ellipsize", "emit_json",
           "fetch_json", "format_duration", "json_parent", "locate", "open_store", "parse_duration", "table", "ts",
           "url_host"]
