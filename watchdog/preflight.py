"""`check` is the truth: what `run` needs beyond a valid file, checked before anything starts.
Stage: composition (may import any stage or adapter; nothing imports it but the CLI).

`offline_problems` adds the checks that need a stage but nothing outside the file (templates rendered
against a sample, route receivers, log catalogs). `live_problems` resolves what `run` will resolve,
the same way: every secret (`*_env` set and not empty, `*_file` readable, a URL from a secret that
parses) by building the notifiers and reading the API keys exactly as the daemon does, every file the
config names, the state dir (created and writable), the HTTP port (bindable) and the runtime (Docker
socket reachable, systemd unit loaded, process command found). `runtime_problems` is kept apart
because `run` tolerates an unreachable Docker or systemd (it waits and reports `docker_unreachable`),
while `check --live` reports it. Every problem is `file:line: field: problem (fix)` against the config
file. This module must never print, never keep a secret value, and never leave anything running (a
probe socket is closed, a test file removed, a client closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from watchdog.adapters.instance_lock import holder_pid
from watchdog.api import exposure_problem, tls_from
from watchdog.clock import SystemClock
from watchdog.config.loader import LineMap, line_map_of
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.config.runtimes import DockerRuntimeSettings, ProcessRuntimeSettings, SystemdRuntimeSettings
from watchdog.errors import ConfigError, Problem, RuntimeUnavailable, WatchdogError
from watchdog.extras import check_extras
from watchdog.model import RunState
from watchdog.notify.receivers import build_all, check_notify
from watchdog.runtimes import build_runtime
from watchdog.secrets import resolve_secret
from watchdog.web.auth import load_token

RUNTIME_TIMEOUT_S = 10.0
"""Deadline of one runtime reachability check (a hung Docker daemon must not hang `check`)."""


# ----------------------------------------------------------------------------- locating problems
def _loc_of(field: str, cfg: WatchdogConfig) -> tuple[str | int, ...]:
    """`notify.receivers[0].url_env` or `notify.receivers.hook.url_env` → a path for the line map."""
    out: list[str | int] = []
    for part in re.split(r"\.|\[(\d+)\]", field):
        if part is None or part == "":
            continue
        out.append(int(part) if part.isdigit() else part)
    if out[:2] == ["notify", "receivers"] and len(out) > 2 and isinstance(out[2], str):
        names = [r.name for r in cfg.notify.receivers]
        if out[2] in names:
            out[2] = names.index(out[2])
    return tuple(out)


def _field_text(loc: tuple[str | int, ...]) -> str:
    text = ""
    for p in loc:
        text += f"[{p}]" if isinstance(p, int) else ("." if text else "") + p
    return text


def locate(problems: Iterable[Problem], cfg: WatchdogConfig, file: str, lines: LineMap | None = None) -> list[Problem]:
    """Problems against the config file get its name, their line and an index-based field path."""
    lm = lines if lines is not None else line_map_of(file)
    out: list[Problem] = []
    for p in problems:
        if p.file in (file, "watchdog.yaml", "config") and p.line is None:
            loc = _loc_of(p.field, cfg)
            line, _ = lm.line_for(loc)
            p = Problem(file, line, _field_text(loc) or p.field, p.message, p.fix)
        out.append(p)
    return out


# ----------------------------------------------------------------------------- offline
def offline_problems(cfg: WatchdogConfig, file: str) -> list[Problem]:
    """Problems that need a stage but nothing outside the file: templates, routes, log catalogs."""
    return locate([*check_notify(cfg, file), *check_extras(cfg, file)], cfg, file)


# ----------------------------------------------------------------------------- live: secrets and files
def _secret_problems(cfg: WatchdogConfig, file: str) -> list[Problem]:
    problems: list[Problem] = []
    for i, t in enumerate(cfg.targets):
        if t.api_key_env or t.api_key_file:
            try:
                resolve_secret(t.api_key_env, t.api_key_file, field=f"targets[{i}].api_key", source=file)
            except ConfigError as e:
                problems.extend(e.problems)
    client = httpx.AsyncClient(trust_env=False)
    try:
        build_all(cfg, client, SystemClock(), source=file)
    except ConfigError as e:
        problems.extend(e.problems)
    finally:
        asyncio.run(client.aclose())
    return problems


def _file_problem(path: Path | None, field: str, file: str, *, directory: bool = False) -> Problem | None:
    if path is None:
        return None
    ok = path.is_dir() if directory else path.is_file()
    if not ok:
        what = "directory" if directory else "file"
        return Problem(file, None, field, f"{what} {path} does not exist", f"create it or fix the path ({what})")
    if not os.access(path, os.R_OK):
        return Problem(file, None, field, f"{path} is not readable by this user", "fix its permissions")
    return None


def _target_files(i: int, t: TargetConfig, file: str) -> list[Problem | None]:
    w = f"targets[{i}]"
    found: list[Problem | None] = [
        _file_problem(t.tls.ca_file, f"{w}.tls.ca_file", file),
        _file_problem(t.detectors.tls.ca_file, f"{w}.detectors.tls.ca_file", file),
        _file_problem(t.probes.logs.catalog_file, f"{w}.probes.logs.catalog_file", file),
    ]
    found += [_file_problem(c.path, f"{w}.config_files[{j}].path", file) for j, c in enumerate(t.config_files)]
    rt = t.runtime
    if isinstance(rt, ProcessRuntimeSettings):
        found.append(_file_problem(rt.env_file, f"{w}.runtime.env_file", file))
        found.append(_file_problem(rt.cwd, f"{w}.runtime.cwd", file, directory=True))
    if isinstance(rt, DockerRuntimeSettings):
        found.append(_file_problem(rt.compose_file, f"{w}.runtime.compose_file", file))
    return found


def _file_problems(cfg: WatchdogConfig, file: str) -> list[Problem]:
    found: list[Problem | None] = []
    for i, t in enumerate(cfg.targets):
        found += _target_files(i, t, file)
    h = cfg.host
    found.append(_file_problem(h.tls.cert_dir, "host.tls.cert_dir", file, directory=True))
    for j, pair in enumerate(h.tls.cert_files):
        found.append(_file_problem(pair.cert, f"host.tls.cert_files[{j}].cert", file))
        found.append(_file_problem(pair.key, f"host.tls.cert_files[{j}].key", file))
    return [p for p in found if p is not None]


# ----------------------------------------------------------------------------- live: state dir and port
def state_dir_problem(state_dir: Path, file: str) -> Problem | None:
    """None when `state_dir` exists (or can be created) and a file can be written into it."""
    fix = "create it and give the watchdog's user write access (systemd: StateDirectory=vllm-watchdog)"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".preflight-", dir=state_dir)
    except OSError as e:
        return Problem(file, None, "state_dir", f"{state_dir} is not usable ({e.strerror or e.__class__.__name__})",
                       fix)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def port_problem(listen: str, port: int, file: str) -> Problem | None:
    """None when `listen:port` can be bound now (port 0 always can)."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(listen, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return Problem(file, None, "http.listen", f"{listen!r} is not an address of this host ({e.strerror})",
                       "use an IP address such as 127.0.0.1 or ::1")
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's start_server does
        try:
            s.bind(addr)
        except OSError as e:
            return Problem(file, None, "http.port", f"{listen}:{port} cannot be bound ({e.strerror})",
                           "stop what holds it (ss -ltnp), pick another port, or set http.port: 0")
    return None


def endpoint_problems(cfg: WatchdogConfig, file: str, *, port: bool = True) -> list[Problem]:
    """The HTTP endpoint as the daemon starts it: token, TLS files, exposure beyond loopback, the port
    (unless `port` is false: the running watchdog of this state dir holds it)."""
    h = cfg.http
    if not h.enabled:
        return []
    problems: list[Problem] = []
    token = tls = False
    try:
        token = load_token(cfg.auth) is not None
    except ConfigError as e:
        problems.extend(Problem(file, None, p.field, p.message, p.fix) for p in e.problems)
    try:
        tls = tls_from(h.tls.cert_file, h.tls.key_file) is not None
    except WatchdogError as e:
        problems.append(Problem(file, None, "http.tls", str(e).removeprefix("http.tls: "),
                                "give readable PEM files that belong together"))
    exposed = exposure_problem(h.listen, tls=tls, token=token)
    if exposed is not None and not problems:
        problems.append(Problem(file, None, "http.listen", exposed.removeprefix("http.listen: "), ""))
    pp = port_problem(h.listen, h.port, file) if port else None
    if pp is not None:
        problems.append(pp)
    return problems


def policy_secret_problems(policies: Iterable[Any], file: str) -> list[Problem]:
    """Secrets named by policy steps (`http_call` token_env/token_file), resolved now instead of at 3 a.m."""
    problems: list[Problem] = []
    for pol in policies:
        for i, step in enumerate(getattr(pol, "steps", [])):
            env, path = getattr(step, "token_env", None), getattr(step, "token_file", None)
            if env or path:
                try:
                    resolve_secret(env, path, field=f"policies.{pol.name}.steps[{i}].token", source="policies")
                except ConfigError as e:
                    problems.extend(e.problems)
    return problems


def live_problems(cfg: WatchdogConfig, file: str, policies: Iterable[Any] = (), *, port: bool = True) -> list[Problem]:
    """What `run` resolves at start, resolved now: secrets (also the policies'), files, state dir, the HTTP
    endpoint and the process command. `run` refuses on any."""
    problems = [*_secret_problems(cfg, file), *_file_problems(cfg, file), *policy_secret_problems(policies, file)]
    sd = state_dir_problem(cfg.state_dir, file)
    if sd is not None:
        problems.append(sd)
    problems += endpoint_problems(cfg, file, port=port)
    problems += command_problems(cfg, file)
    return locate(problems, cfg, file)


# ----------------------------------------------------------------------------- live: runtimes
def _command_problem(i: int, rt: ProcessRuntimeSettings, file: str) -> Problem | None:
    exe = rt.command[0]
    cwd = rt.cwd if rt.cwd is not None else Path.cwd()
    found = (os.access(cwd / exe, os.X_OK) if "/" in exe else shutil.which(exe) is not None)
    if not found:
        return Problem(file, None, f"targets[{i}].runtime.command", f"{exe!r} is not an executable on PATH",
                       "give the full path of the server's executable")
    return None


async def _reachable(i: int, t: TargetConfig, file: str) -> Problem | None:
    rt = build_runtime(t)
    if rt is None:
        return None
    field = f"targets[{i}].runtime"
    try:
        async with asyncio.timeout(RUNTIME_TIMEOUT_S):
            st = await rt.state()
    except (RuntimeUnavailable, TimeoutError) as e:
        fix = ("start Docker or fix docker_host / DOCKER_HOST" if isinstance(t.runtime, DockerRuntimeSettings)
               else "run on a systemd host, or fix runtime.systemctl")
        return Problem(file, None, field, f"{t.runtime.type if t.runtime else ''} is not reachable: "
                       f"{str(e) or 'timed out'}", fix)
    finally:
        await rt.close()
    if isinstance(t.runtime, SystemdRuntimeSettings) and st.state == RunState.MISSING:
        return Problem(file, None, f"{field}.unit", f"unit {t.runtime.unit!r} is not loaded ({st.detail})",
                       "install the unit or fix the name (systemctl list-unit-files)")
    return None


def command_problems(cfg: WatchdogConfig, file: str) -> list[Problem]:
    """Process runtimes whose command cannot be found (run would spawn nothing and 'heal' forever)."""
    found = [_command_problem(i, t.runtime, file) for i, t in enumerate(cfg.targets)
             if isinstance(t.runtime, ProcessRuntimeSettings)]
    return [p for p in found if p is not None]


def runtime_problems(cfg: WatchdogConfig, file: str) -> list[Problem]:
    """Runtime reachability: Docker engine answers, systemd unit exists (sync: call it outside a loop)."""
    found = [asyncio.run(_reachable(i, t, file)) for i, t in enumerate(cfg.targets)
             if t.runtime is not None and not isinstance(t.runtime, ProcessRuntimeSettings)]
    return [p for p in found if p is not None]


def check_live(cfg: WatchdogConfig, file: str, policies: Iterable[Any] = ()) -> list[Problem]:
    """Everything `check --live` reports: `live_problems` plus runtime reachability. While a watchdog runs on
    this state dir (it holds the instance lock) its own port is not a problem: checking before a reload works."""
    running = holder_pid(cfg.state_dir) is not None
    return live_problems(cfg, file, policies, port=not running) + locate(runtime_problems(cfg, file), cfg, file)


__all__ = [
    "check_live",
    "command_problems",
    "endpoint_problems",
    "live_problems",
    "locate",
    "offline_problems",
    "policy_secret_problems",
    "port_problem",
    "runtime_problems",
    "state_dir_problem",
]
