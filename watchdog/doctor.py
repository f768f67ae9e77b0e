"""`vllm-watchdog doctor`: reach everything the daemon depends on, now, and say what works. Stage: operator
interface (composition: it may use probes, adapters, notifiers and preflight).

One line per check, `ok` / `warn` / `fail`: the config, the state dir (and whether a daemon holds it), the
HTTP port (free to bind, or the running daemon answers on it), each target (liveness and readiness through
the daemon's own probes: health, served model, API key accepted), each runtime (Docker engine, systemd
unit, process command), NVML, and every receiver with a dry request where its API has one (Alertmanager
`GET /api/v2/status`, SMTP EHLO/STARTTLS/NOOP, webhook HEAD); Slack and PagerDuty get a configuration
check only (their APIs have no dry request, and the host may have no route to them). Exit 1 when any
check fails, 2 when the config is invalid. It must never send a notification, never change a target or a
runtime, never print a secret (a webhook URL from a secret is never shown), and never leave a connection
or a client open.
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import ssl
import sys
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from watchdog import preflight
from watchdog.adapters.nvml import NvmlError, RealNvml
from watchdog.cli_common import (
    EXIT_ATTENTION,
    EXIT_OK,
    EXIT_USAGE,
    Located,
    Paint,
    duration_arg,
    ellipsize,
    emit_json,
    fetch_json,
    locate,
)
from watchdog.clock import SystemClock
from watchdog.config.models import TargetConfig, WatchdogConfig
from watchdog.config.receivers import (
    AlertmanagerReceiverConfig,
    EmailReceiverConfig,
    PagerDutyReceiverConfig,
    SlackReceiverConfig,
    WebhookReceiverConfig,
)
from watchdog.errors import ConfigError
from watchdog.loading import load_all
from watchdog.notify.notifiers import build_notifier
from watchdog.secrets import resolve_secret
from watchdog.textsafe import safe_text
from watchdog.watch import build_probes, target_client

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    area: str
    name: str
    status: Status
    detail: str

    def line(self, paint: Paint) -> str:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}[self.status]
        return f"{paint(colour, self.status.ljust(4))}  {self.area} {self.name}: {safe_text(self.detail)}"


async def _bounded(what: Awaitable[Check], timeout_s: float, area: str, name: str) -> Check:
    try:
        async with asyncio.timeout(timeout_s):
            return await what
    except TimeoutError:
        return Check(area, name, "fail", f"no answer within {timeout_s:g} s")


# ---------------------------------------------------------------------- host
def host_checks(loc: Located, cfg: WatchdogConfig) -> list[Check]:
    out: list[Check] = []
    pid = loc.daemon_pid()
    sd = preflight.state_dir_problem(cfg.state_dir, loc.config_path)
    if sd is not None:
        out.append(Check("state", "dir", "fail", f"{sd.message} ({sd.fix})"))
    else:
        db = "database present" if (cfg.state_dir / "state.db").exists() else "no database yet"
        out.append(Check("state", "dir", "ok", f"{cfg.state_dir} writable; {db}"))
    out.append(Check("daemon", "process", "ok" if pid else "warn",
                     f"running (pid {pid})" if pid else f"no daemon holds {cfg.state_dir}"))
    if not cfg.http.enabled:
        out.append(Check("http", "port", "ok", "endpoint disabled (http.enabled: false)"))
    elif pid is not None:
        hz = fetch_json(loc, "/healthz")
        out.append(Check("http", "port", "ok" if hz else "fail",
                         f"the daemon answers at {loc.url}/healthz: {hz.get('status')}" if isinstance(hz, dict)
                         else f"the daemon runs but {loc.url or 'its endpoint'} does not answer"))
    else:
        pp = preflight.port_problem(cfg.http.listen, cfg.http.port, loc.config_path)
        out.append(Check("http", "port", "fail", f"{pp.message} ({pp.fix})") if pp is not None else
                   Check("http", "port", "ok", f"{cfg.http.listen}:{cfg.http.port} can be bound"))
    out.append(nvml_check())
    return out


def nvml_check() -> Check:
    nv = RealNvml()
    try:
        nv.init()
    except NvmlError as e:
        return Check("gpu", "nvml", "warn", f"NVML not available, GPU checks are off: {ellipsize(str(e), 160)}")
    try:
        return Check("gpu", "nvml", "ok", f"driver {nv.driver_version()}, {nv.device_count()} GPU(s)")
    except NvmlError as e:
        return Check("gpu", "nvml", "fail", ellipsize(str(e), 200))
    finally:
        nv.shutdown()


# ---------------------------------------------------------------------- targets
async def target_checks(t: TargetConfig, i: int, file: str, timeout_s: float) -> list[Check]:
    area = f"target {t.name}"
    api_key: str | None = None
    out: list[Check] = []
    if t.api_key_env or t.api_key_file:
        try:
            api_key = resolve_secret(t.api_key_env, t.api_key_file, field=f"targets[{i}].api_key",
                                     source=file).reveal()
            out.append(Check(area, "api key", "ok", "resolved (whether vLLM accepts it: readiness below)"))
        except ConfigError as e:
            out.append(Check(area, "api key", "fail", str(e.problems[0]) if e.problems else str(e)))
    clock = SystemClock()
    client = target_client(t)
    try:
        probes, _ = build_probes(t, client, clock, api_key, clock.monotonic())
        for name in ("liveness", "readiness"):
            if name in probes:
                r = await probes[name].check()
                detail = f"{r.summary} ({r.duration_s * 1000:.0f} ms)"
                if name == "readiness" and not r.ok and "401" in r.summary:
                    detail = f"the API key was rejected: {detail}"
                out.append(Check(area, name, "ok" if r.ok else "fail", detail))
    finally:
        await client.aclose()
    return out


def runtime_checks(cfg: WatchdogConfig, file: str) -> list[Check]:
    problems = preflight.runtime_problems(cfg, file)
    out: list[Check] = []
    for i, t in enumerate(cfg.targets):
        if t.runtime is None:
            continue
        mine = [p for p in problems if p.field.startswith(f"targets[{i}].")]
        what = {"docker": "Docker engine and container", "systemd": "systemd unit", "process": "command"}
        out.append(Check(f"target {t.name}", f"runtime {t.runtime.type}", "fail" if mine else "ok",
                         "; ".join(f"{p.message} ({p.fix})" for p in mine) or
                         f"{what.get(t.runtime.type, 'runtime')} reachable"))
    return out


# ---------------------------------------------------------------------- receivers
def _secret_value(env: str | None, file: Any, field: str, source: str) -> str | None:
    return resolve_secret(env, file, field=field, source=source).reveal() if (env or file) else None


async def _http_check(area: str, name: str, method: str, url: str, shown: str, timeout_s: float,
                      headers: dict[str, str] | None = None, auth: Any = None) -> Check:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=timeout_s) as c:
            r = await c.request(method, url, headers=headers, auth=auth)
    except httpx.HTTPError as e:
        return Check(area, name, "fail", f"{method} {shown}: {e.__class__.__name__}")
    status: Status = "ok" if r.status_code < 400 else "warn" if r.status_code < 500 else "fail"
    if r.status_code in (401, 403):
        status = "fail"
    return Check(area, name, status, f"{method} {shown} → {r.status_code}")


def _shown(url: str, secret: bool) -> str:
    if secret:
        return "(URL from a secret, not shown)"
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc.rsplit('@', 1)[-1]}{u.path}"


def _smtp_noop(rc: EmailReceiverConfig, timeout_s: float) -> str:
    port = rc.port or {"starttls": 587, "ssl": 465, "none": 25}[rc.security]
    ctx = ssl.create_default_context(cafile=str(rc.ca_file) if rc.ca_file else None)
    if not rc.verify:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    smtp: smtplib.SMTP = (smtplib.SMTP_SSL(rc.host, port, timeout=timeout_s, context=ctx) if rc.security == "ssl"
                          else smtplib.SMTP(rc.host, port, timeout=timeout_s))
    try:
        smtp.ehlo(rc.local_hostname or "")
        steps = ["EHLO"]
        if rc.security == "starttls":
            smtp.starttls(context=ctx)
            smtp.ehlo(rc.local_hostname or "")
            steps.append("STARTTLS")
        if rc.username and not smtp.has_extn("auth"):
            raise smtplib.SMTPException("the server offers no AUTH but a username is configured")
        code, _ = smtp.noop()
        steps.append(f"NOOP {code}")
        return ", ".join(steps)
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPException:
            smtp.close()


async def receiver_check(rc: Any, file: str, cfg: WatchdogConfig, timeout_s: float) -> Check:
    name = rc.name or rc.type
    area = f"receiver {name}"
    try:
        async with httpx.AsyncClient(trust_env=False) as c:
            await build_notifier(name, rc, c, SystemClock(), base_dir=cfg.config_dir, source=file).aclose()
    except ConfigError as e:
        return Check(area, rc.type, "fail", str(e.problems[0]) if e.problems else str(e))
    if isinstance(rc, AlertmanagerReceiverConfig):
        token = _secret_value(rc.bearer_token_env, rc.bearer_token_file, "bearer_token", file)
        pw = _secret_value(rc.basic_auth_password_env, rc.basic_auth_password_file, "basic_auth_password", file)
        auth = (rc.basic_auth_username, pw) if rc.basic_auth_username and pw is not None else None
        checks = [await _http_check(area, "alertmanager", "GET", u.rstrip("/") + "/api/v2/status",
                                    _shown(u.rstrip("/") + "/api/v2/status", False), timeout_s,
                                    {"Authorization": f"Bearer {token}"} if token else None, auth)
                  for u in rc.urls]
        worst = max(checks, key=lambda ch: ["ok", "warn", "fail"].index(ch.status))
        return Check(area, "alertmanager", worst.status, "; ".join(ch.detail for ch in checks))
    if isinstance(rc, WebhookReceiverConfig):
        secret = rc.url is None
        url = rc.url or _secret_value(rc.url_env, rc.url_file, "url", file) or ""
        return await _http_check(area, "webhook", "HEAD", url, _shown(url, secret), timeout_s)
    if isinstance(rc, EmailReceiverConfig):
        try:
            steps = await asyncio.to_thread(_smtp_noop, rc, timeout_s)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
            return Check(area, "email", "fail", f"{rc.host}: {e.__class__.__name__}: {ellipsize(str(e), 120)}")
        return Check(area, "email", "ok", f"{rc.host}: {steps} (nothing sent)")
    if isinstance(rc, SlackReceiverConfig):
        url = _secret_value(rc.url_env, rc.url_file, "url", file) or ""
        ok = url.startswith("https://hooks.slack.com/")
        return Check(area, "slack", "ok" if ok else "warn", "URL resolved (not contacted: Slack has no dry request)"
                     if ok else "URL resolved but it is not https://hooks.slack.com/… (a proxy?)")
    if isinstance(rc, PagerDutyReceiverConfig):
        key = _secret_value(rc.routing_key_env, rc.routing_key_file, "routing_key", file) or ""
        ok = len(key) == 32
        return Check(area, "pagerduty", "ok" if ok else "warn",
                     "routing key resolved (not contacted: the Events API has no dry request)" if ok else
                     f"routing key resolved but it has {len(key)} characters (integration keys have 32)")
    return Check(area, rc.type, "ok", "configured (nothing to reach)")


# ---------------------------------------------------------------------- the verb
async def _remote(cfg: WatchdogConfig, file: str, timeout_s: float) -> list[Check]:
    out: list[Check] = []
    for i, t in enumerate(cfg.targets):
        try:
            async with asyncio.timeout(timeout_s * 3):
                out += await target_checks(t, i, file, timeout_s)
        except TimeoutError:
            out.append(Check(f"target {t.name}", "probes", "fail", f"no answer within {timeout_s * 3:g} s"))
    for rc in cfg.notify.receivers:
        out.append(await _bounded(receiver_check(rc, file, cfg, timeout_s), timeout_s * 2,
                                  f"receiver {rc.name or rc.type}", rc.type))
    return out


def run_checks(loc: Located, timeout_s: float) -> tuple[list[Check], int]:
    try:
        cfg, _ = load_all(loc.config_path)
    except ConfigError as e:
        return [Check("config", loc.config_path, "fail", f"{p}") for p in e.problems], EXIT_USAGE
    except OSError as e:
        return [Check("config", loc.config_path, "fail", f"cannot read it: {e.strerror or e}")], EXIT_USAGE
    checks = [Check("config", loc.config_path, "ok", f"{len(cfg.targets)} target(s), "
                    f"{len(cfg.notify.receivers)} receiver(s)")]
    checks += host_checks(loc, cfg)
    checks += runtime_checks(cfg, loc.config_path)
    checks += asyncio.run(_remote(cfg, loc.config_path, timeout_s))
    return checks, EXIT_ATTENTION if any(c.status == "fail" for c in checks) else EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    checks, code = run_checks(locate(args.config), args.timeout)
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail")}
    if args.json:
        emit_json({"ok": code == EXIT_OK, "counts": counts, "checks": [asdict(c) for c in checks],
                   "elapsed_s": round(time.monotonic() - t0, 3)})
        return code
    paint = Paint()
    for c in checks:
        print(c.line(paint))
    print(f"\n{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail", file=sys.stdout)
    return code


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], js: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[*parents, js], help="reach targets, runtimes, NVML, state, port and "
                       "receivers now; one ok/warn/fail line each (exit 1 on a fail)")
    p.add_argument("--timeout", type=duration_arg, default=5.0, metavar="DURATION",
                   help="per-request timeout (e.g. 5s, 500ms; default 5s)")
    p.set_defaults(func=cmd_doctor)


__all__ = ["Check", "add_parser", "cmd_doctor", "receiver_check", "run_checks", "target_checks"]
