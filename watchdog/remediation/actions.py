"""Remediation actions: restart, start, stop, recreate, set_config, rollback_config, prune, http_call,
exec, notify, escalate. Stage: remediate (act).

Each action is one async function over an `ActionContext` and returns an ActionResult with a reason.
Actions that change more than one thing write *checkpoints* to the durable ledger between their phases
(e.g. "config_written" before "restart issued"), so a daemon killed in between completes the step exactly
once after it comes back. Actions must never decide whether to run (guards do) and never log a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from watchdog.adapters.http import HTTP_CALL_BODY_CAP, classify_http_error, request_capped
from watchdog.adapters.process import read_env_file
from watchdog.clock import Clock
from watchdog.config.models import ConfigFileRef
from watchdog.errors import RuntimeUnavailable
from watchdog.model import ActionOutcome, ActionResult, Incident
from watchdog.protocols import Runtime
from watchdog.remediation import config_edit as CE
from watchdog.remediation import policy as P
from watchdog.remediation import snapshots as SN
from watchdog.secrets import child_env, redact, redact_data, register_secret


@dataclass
class TargetHandle:
    """What actions may touch for one target (built by the composition root)."""

    name: str
    runtime: Runtime | None
    config_files: Mapping[str, ConfigFileRef]
    verify_ready: Callable[[], Awaitable[bool]]
    on_restarted: Callable[[], None] = lambda: None
    restarting: Callable[[bool], None] = lambda flag: None  # probes pause judging while we stop/start it
    stop_timeout_s: float = 10.0
    http: httpx.AsyncClient | None = None


@dataclass
class ActionContext:
    target: TargetHandle
    incident: Incident
    step: Any  # one of the policy step models
    clock: Clock
    state_dir: Path
    phase: str = "started"  # where a resumed attempt left off
    details: dict[str, Any] = field(default_factory=dict)  # checkpointed details of a resumed attempt
    checkpoint: Callable[[str, Mapping[str, Any]], None] = lambda phase, details: None
    resolve_secret: Callable[[str | None, Path | None, str], str | None] = lambda env, file, fld: None


def _ok(action: str, reason: str, **details: Any) -> ActionResult:
    return ActionResult(action=action, outcome=ActionOutcome.OK, reason=reason, details=details)


def _fail(action: str, reason: str, **details: Any) -> ActionResult:
    return ActionResult(action=action, outcome=ActionOutcome.FAILED, reason=reason, details=details)


def _runtime(ctx: ActionContext, action: str) -> Runtime | ActionResult:
    if ctx.target.runtime is None:
        return _fail(action, f"target '{ctx.target.name}' has no runtime configured: nothing to {action}")
    return ctx.target.runtime


def _unreachable(action: str, e: RuntimeUnavailable) -> ActionResult:
    """The runtime cannot be reached: nothing was done, so the attempt must not spend the ladder."""
    return ActionResult(action, ActionOutcome.SKIPPED, f"RUNTIME_UNREACHABLE: {str(e)[:300]}")


async def _guarded(action: str, coro: Awaitable[ActionResult]) -> ActionResult:
    try:
        return await coro
    except RuntimeUnavailable as e:
        return _unreachable(action, e)
    except Exception as e:  # an adapter failure is a failed action with a reason, never a crash
        return _fail(action, f"{e.__class__.__name__}: {str(e)[:300]}")


async def do_restart(ctx: ActionContext) -> ActionResult:
    rt = _runtime(ctx, "restart")
    if isinstance(rt, ActionResult):
        return rt
    timeout = ctx.step.timeout_s if getattr(ctx.step, "timeout_s", None) is not None else ctx.target.stop_timeout_s
    try:  # an exited container is started, not restarted
        st = await rt.state()
    except RuntimeUnavailable as e:
        return _unreachable("restart", e)
    except Exception as e:
        return _fail("restart", f"cannot read the runtime state: {e.__class__.__name__}: {str(e)[:200]}")
    ctx.target.restarting(True)
    try:
        if st.state.value in ("exited", "missing"):
            res = await _guarded("restart", rt.start())
        else:
            res = await _guarded("restart", rt.restart(timeout_s=timeout))
    finally:
        ctx.target.restarting(False)
    if res.ok:
        ctx.target.on_restarted()
    return ActionResult("restart", res.outcome, res.reason, res.details)


async def do_start(ctx: ActionContext) -> ActionResult:
    rt = _runtime(ctx, "start")
    if isinstance(rt, ActionResult):
        return rt
    res = await _guarded("start", rt.start())
    if res.ok:
        ctx.target.on_restarted()
    return res


async def do_stop(ctx: ActionContext) -> ActionResult:
    rt = _runtime(ctx, "stop")
    if isinstance(rt, ActionResult):
        return rt
    timeout = ctx.step.timeout_s if getattr(ctx.step, "timeout_s", None) is not None else ctx.target.stop_timeout_s
    return await _guarded("stop", rt.stop(timeout_s=timeout))


async def _recreate(ctx: ActionContext, env: Mapping[str, str] | None, action: str) -> ActionResult:
    rt = _runtime(ctx, action)
    if isinstance(rt, ActionResult):
        return rt
    ctx.target.restarting(True)
    try:
        res = await _guarded(action, rt.recreate(env=env, timeout_s=ctx.target.stop_timeout_s))
    finally:
        ctx.target.restarting(False)
    if not res.ok:
        return res
    ctx.target.on_restarted()
    if env:
        try:
            eff = await rt.effective_env()
        except Exception as e:
            return _fail(action, f"re-created, but the running environment cannot be read: {e.__class__.__name__}")
        wrong = {k: eff.get(k) for k, v in env.items() if eff.get(k) != v}
        if wrong:
            return _fail(action, f"re-created, but the server does not run with the new values: {sorted(wrong)}",
                         expected=dict(env), running={k: eff.get(k) for k in env})
        return _ok(action, "re-created; the running server uses the new values", env=dict(env))
    return res


async def do_recreate(ctx: ActionContext) -> ActionResult:
    return await _recreate(ctx, None, "recreate")


def _config_ref(ctx: ActionContext, name: str) -> ConfigFileRef | None:
    return ctx.target.config_files.get(name)


async def do_set_config(ctx: ActionContext) -> ActionResult:
    step: P.SetConfigStep = ctx.step
    ref = _config_ref(ctx, step.config)
    if ref is None:
        return _fail("set_config", f"target '{ctx.target.name}' has no config file named '{step.config}'")
    if ctx.phase == "started":
        cfile = CE.ConfigFile(path=ref.path, format=ref.format)
        edits = [CE.Edit(setting=e.setting, op=e.op, value=e.value, floor=e.floor, ceiling=e.ceiling, key=e.key)
                 for e in step.edits]
        try:
            plan = await asyncio.to_thread(CE.plan, cfile, edits)
        except Exception as e:
            return _fail("set_config", f"cannot plan the edit of {ref.path}: {str(e)[:300]}")
        if plan.refusal:
            return ActionResult("set_config", ActionOutcome.FAILED, plan.refusal,
                                {"refused": True, "code": str(plan.code)})
        try:
            applied = await asyncio.to_thread(CE.apply, plan, backup_dir=ctx.state_dir / "backups", clock=ctx.clock)
        except Exception as e:
            return _fail("set_config", f"cannot write {ref.path}: {str(e)[:300]}")
        changes = [{"key": c.key, "before": c.before, "after": c.after} for c in applied.changes]
        env = CE.env_for(applied.changes) if ref.format == "env" else {}
        details = {"file": str(ref.path), "backup": str(applied.backup_path) if applied.backup_path else None,
                   "changes": changes, "env": env}
        ctx.checkpoint("config_written", details)
        ctx.details.update(details)
    if step.then == "none":
        return _ok("set_config", "config edited (no recreate requested)", **ctx.details)
    env = dict(ctx.details.get("env") or {})
    res = await _recreate(ctx, env or None, "set_config")
    ctx.checkpoint("acted", {"recreate": res.reason})
    return ActionResult("set_config", res.outcome, f"{_describe(ctx.details)}; {res.reason}",
                        {**ctx.details, **dict(res.details)})


def _describe(details: Mapping[str, Any]) -> str:
    ch = details.get("changes") or []
    return ", ".join(f"{c['key']} {c['before']} → {c['after']}" for c in ch) or "no change"


async def do_rollback(ctx: ActionContext) -> ActionResult:
    step: P.RollbackStep = ctx.step
    refs = [ctx.target.config_files[step.config]] if step.config else list(ctx.target.config_files.values())
    if not refs or any(r is None for r in refs):
        return _fail("rollback_config", "no config file to roll back")
    if ctx.phase == "started":
        store = SN.SnapshotStore(ctx.state_dir / "snapshots" / ctx.target.name, ctx.clock)
        try:
            if step.source == "git":
                git = SN.GitHistory(refs[0].path.parent)
                restored = await asyncio.to_thread(git.restore_last_good, store, [r.path for r in refs],
                                                   backup_dir=ctx.state_dir / "backups")
                desc = f"restored from git commit {restored.snapshot_id}"
            else:
                snap = store.last_good()
                if snap is None:
                    return _fail("rollback_config", "no last-known-good snapshot yet (the target was never ready "
                                 "for the soak time)")
                restored = await asyncio.to_thread(store.restore, snap, backup_dir=ctx.state_dir / "backups")
                desc = f"restored snapshot {snap.id}"
        except Exception as e:
            return _fail("rollback_config", f"rollback failed: {str(e)[:300]}")
        env: dict[str, str] = {}
        for r in refs:
            if r.format == "env":
                env.update(_read_env_file(r.path))
        details = {"snapshot": str(restored.snapshot_id), "restored": [str(p) for p in restored.restored],
                   "backups": [str(p) for p in restored.backups], "env": env, "summary": desc}
        ctx.checkpoint("config_written", details)
        ctx.details.update(details)
    if step.then == "none":
        return _ok("rollback_config", str(ctx.details.get("summary")), **ctx.details)
    res = await _recreate(ctx, dict(ctx.details.get("env") or {}) or None, "rollback_config")
    return ActionResult("rollback_config", res.outcome, f"{ctx.details.get('summary')}; {res.reason}",
                        {**ctx.details, **dict(res.details)})


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        return read_env_file(path)
    except (OSError, UnicodeDecodeError):
        return {}


async def do_prune(ctx: ActionContext) -> ActionResult:
    step: P.PruneStep = ctx.step
    details: dict[str, Any] = {}
    rt = ctx.target.runtime
    prune = getattr(rt, "prune", None)
    if prune is not None:
        try:
            details["docker"] = await prune(build_cache=step.build_cache)
        except TypeError:
            details["docker"] = await prune()
        except Exception as e:
            return _fail("prune", f"docker prune failed: {e.__class__.__name__}: {str(e)[:200]}")
    freed = 0
    for p in step.paths:
        freed += await asyncio.to_thread(_empty_dir, p)
    details["paths_freed_bytes"] = freed
    if prune is None and not step.paths:
        return _fail("prune", "nothing to prune: the runtime is not docker and no paths are configured")
    return _ok("prune", "reclaimed disk", **details)


def _empty_dir(p: Path) -> int:
    """Remove the *contents* of a configured temp/cache dir (never the dir, never outside it)."""
    freed = 0
    if not p.is_dir() or p.resolve() == Path("/"):
        return 0
    for child in p.iterdir():
        try:
            if child.is_symlink() or child.is_file():
                freed += child.lstat().st_size
                child.unlink()
            elif child.is_dir():
                for f in child.rglob("*"):
                    if f.is_file() and not f.is_symlink():
                        freed += f.lstat().st_size
                shutil.rmtree(child)
        except OSError:
            continue
    return freed


async def do_http_call(ctx: ActionContext) -> ActionResult:
    step: P.HttpCallStep = ctx.step
    if step.require_ready and not await ctx.target.verify_ready():
        return ActionResult("http_call", ActionOutcome.SKIPPED, "WAITING_FOR_READY: the vLLM target is not ready yet")
    headers = dict(step.headers)
    token = ctx.resolve_secret(step.token_env, step.token_file, "token")
    if token:
        register_secret(token)
        headers["Authorization"] = f"Bearer {token}"
    client = ctx.target.http or httpx.AsyncClient(trust_env=False)
    where = f"{step.method} {_safe_url(step.url)}"
    try:  # the answer is read up to HTTP_CALL_BODY_CAP, never whole; a trickle ends at the deadline
        resp, truncated = await request_capped(client, step.method, step.url, cap=HTTP_CALL_BODY_CAP,
                                               deadline_s=step.timeout_s, headers=headers, json=step.body)
    except (TimeoutError, httpx.HTTPError, OSError) as e:
        return _fail("http_call", f"{where}: {classify_http_error(e)}")
    finally:
        if ctx.target.http is None:
            await client.aclose()
    details: dict[str, Any] = {"status": resp.status_code, "body": _tail(resp.content, 500)}
    if truncated:
        details["body_truncated_at"] = HTTP_CALL_BODY_CAP
    if resp.status_code in step.expect_status:
        return _ok("http_call", f"{where} → {resp.status_code}", **details)
    return _fail("http_call", f"{where} → {resp.status_code} (expected {step.expect_status})", **details)


def _tail(raw: bytes | bytearray, limit: int) -> str:
    """The last `limit` characters of `raw` as text (what a person needs to see of an answer)."""
    return raw[-4 * limit:].decode("utf-8", errors="replace")[-limit:]


def _safe_url(url: str) -> str:
    """Scheme, host and path only: query strings and userinfo may carry secrets."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}{':' + str(parsed.port) if parsed.port else ''}{parsed.path}"


EXEC_KEEP_BYTES = 64 * 1024  # of an exec step's output, only the last 64 KB is ever held in memory


async def do_exec(ctx: ActionContext) -> ActionResult:
    step: P.ExecStep = ctx.step
    inc = ctx.incident
    incident_env = {"WATCHDOG_TARGET": inc.target, "WATCHDOG_INCIDENT_ID": str(inc.id),
                    "WATCHDOG_INCIDENT_KIND": inc.kind, "WATCHDOG_SEVERITY": inc.severity.value,
                    "WATCHDOG_FINGERPRINT": inc.fingerprint, "WATCHDOG_SUMMARY": inc.summary[:500]}
    # minimal: PATH/LANG/HOME, the incident, and exactly what the step declares (never the daemon's secrets)
    env = child_env(pass_env=step.pass_env, env={**incident_env, **step.env})
    try:
        proc = await asyncio.create_subprocess_exec(
            *step.argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    except OSError as e:
        return _fail("exec", f"cannot run {step.argv[0]}: {e.strerror or e.__class__.__name__}")
    kept = bytearray()
    try:
        async with asyncio.timeout(step.timeout_s):
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(EXEC_KEEP_BYTES):
                kept += chunk
                del kept[:-EXEC_KEEP_BYTES]
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the step's whole process group: no orphan outlives it
        await proc.wait()
        return _fail("exec", f"{step.argv[0]} timed out after {step.timeout_s:g} s (killed)", output=_tail(kept, 500))
    tail = _tail(kept, 500)
    if proc.returncode == 0:
        return _ok("exec", f"{step.argv[0]} exited 0", output=tail)
    return _fail("exec", f"{step.argv[0]} exited {proc.returncode}", output=tail)


async def do_notify(ctx: ActionContext) -> ActionResult:
    return _ok("notify", ctx.step.message or "notified")


async def do_escalate(ctx: ActionContext) -> ActionResult:
    return _ok("escalate", ctx.step.message or f"escalated to {ctx.step.severity.value}")


ActionFn = Callable[[ActionContext], Awaitable[ActionResult]]


def _redacted(fn: ActionFn) -> ActionFn:
    """Every known secret value is scrubbed from an action's reason and details before anyone stores them
    (an `exec` that echoes an API key, an error that quotes a URL with a token)."""

    async def run(ctx: ActionContext) -> ActionResult:
        res = await fn(ctx)
        return ActionResult(res.action, res.outcome, redact(res.reason), redact_data(dict(res.details)))

    run.__name__ = run.__qualname__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


ACTIONS: dict[str, ActionFn] = {
    name: _redacted(fn) for name, fn in {
        "restart": do_restart,
        "start": do_start,
        "stop": do_stop,
        "recreate": do_recreate,
        "set_config": do_set_config,
        "rollback_config": do_rollback,
        "prune": do_prune,
        "http_call": do_http_call,
        "exec": do_exec,
        "notify": do_notify,
        "escalate": do_escalate,
    }.items()
}

# actions whose success is proven by readiness passing again (verification)
VERIFIED = P.VERIFIED  # derived from the step models (policy.py): one place
assert set(ACTIONS) == set(P.ACTION_NAMES)
