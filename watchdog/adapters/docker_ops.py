"""Docker runtime adapter, the engine calls behind `DockerRuntime`: map `docker inspect` to a RuntimeState,
re-create a container from its inspected configuration, prune what the target does not use. Stage: act
(adapter).

Every function here is blocking docker-py code that `DockerRuntime` runs in a worker thread. It must never
decide anything, never prune the image the target runs or any volume, and never log an environment value.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import docker
import docker.errors

from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeState

OLD_SUFFIX = "-wdold-"  # name infix of a container kept aside during our own recreate



def _parse_time(s: str | None) -> float | None:
    """RFC3339 with nanoseconds → epoch seconds; docker's zero time → None."""
    if not s or s.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _newest(lines: list[tuple[int, str]], max_lines: int) -> list[LogLine]:
    """(ns, text) lines → LogLines, oldest first, the newest `max_lines` of them."""
    return [LogLine(text=text, at=ns / 1e9) for ns, text in sorted(lines, key=lambda x: x[0])[-max_lines:]]


def _env_list_to_dict(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env or []:
        k, sep, v = item.partition("=")
        out[k] = v if sep else ""
    return out


_STATUS_MAP = {
    "running": RunState.RUNNING,
    "restarting": RunState.RESTARTING,
    "paused": RunState.PAUSED,
    "exited": RunState.EXITED,
    "dead": RunState.EXITED,
    "created": RunState.EXITED,  # never started (or re-created and not started): not serving
    "removing": RunState.MISSING,
}


def state_from_inspect(attrs: Mapping[str, Any]) -> RuntimeState:
    """Map `docker inspect` output to a RuntimeState (an exited container is EXITED whatever its code)."""
    st = attrs.get("State") or {}
    status = str(st.get("Status") or "")
    health = (st.get("Health") or {}).get("Status")
    exit_code = st.get("ExitCode")
    running = status in ("running", "paused", "restarting")
    detail = f"status={status}"
    if st.get("Error"):
        detail += f"; error={str(st['Error'])[:200]}"
    if st.get("OOMKilled"):
        detail += "; OOMKilled"
    return RuntimeState(
        state=_STATUS_MAP.get(status, RunState.UNKNOWN),
        exit_code=None if running or exit_code is None else int(exit_code),
        oom_killed=bool(st.get("OOMKilled")),
        restart_count=int(attrs.get("RestartCount") or 0),
        started_at=_parse_time(st.get("StartedAt")),
        pid=int(st["Pid"]) if st.get("Pid") else None,
        health=str(health) if health else None,
        id=str(attrs.get("Id") or "") or None,
        detail=detail,
        restart_policy=str(((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"),
    )


def _ok(action: str, reason: str, **details: Any) -> ActionResult:
    return ActionResult(action=action, outcome=ActionOutcome.OK, reason=reason, details=details)


def _fail(action: str, reason: str, **details: Any) -> ActionResult:
    return ActionResult(action=action, outcome=ActionOutcome.FAILED, reason=reason, details=details)


def _api_reason(e: docker.errors.APIError) -> str:
    return f"docker API error {e.status_code}: {str(e.explanation or e)[:300]}"





def recreate_from_inspect(
    client: Any, attrs: dict[str, Any], env: Mapping[str, str], t: int
) -> tuple[ActionResult, str]:
    """Create a twin from the inspected config with `env` merged; keep the old one aside until it runs.
    Returns the result and the id of the container that now carries the name (new, or the old one restored)."""
    api = client.api
    old_id = str(attrs["Id"])
    name = str(attrs.get("Name") or "").lstrip("/")
    cfg: dict[str, Any] = attrs.get("Config") or {}
    host_cfg: dict[str, Any] = dict(attrs.get("HostConfig") or {})
    was_running = bool((attrs.get("State") or {}).get("Running"))
    new_env = {**_env_list_to_dict(cfg.get("Env")), **dict(env)}
    aside = f"{name}{OLD_SUFFIX}{uuid.uuid4().hex[:8]}"

    networks: dict[str, Any] = ((attrs.get("NetworkSettings") or {}).get("Networks")) or {}
    mode = str(host_cfg.get("NetworkMode") or "")
    endpoints: dict[str, Any] = {}
    extra_nets: list[tuple[str, dict[str, Any]]] = []
    for net, ep in networks.items():
        if net in ("host", "none", "bridge", "default") or mode.startswith("container:"):
            continue
        short = old_id[:12]
        conf = {"Aliases": [a for a in (ep or {}).get("Aliases") or [] if a not in (short, old_id)] or None}
        if net == mode or (not endpoints and mode not in networks):
            endpoints[net] = conf
        else:
            extra_nets.append((net, conf))

    # the inspected Config, verbatim but for Env (merged) and the hostname docker derived from the old id
    new_config: dict[str, Any] = {k: v for k, v in cfg.items() if k not in ("Hostname", "Env", "MacAddress")}
    new_config["Env"] = [f"{k}={v}" for k, v in new_env.items()]
    hostname = cfg.get("Hostname")
    if hostname and hostname != old_id[:12] and mode != "host" and not mode.startswith("container:"):
        new_config["Hostname"] = hostname
    new_config["HostConfig"] = host_cfg  # binds, mounts, network_mode, restart policy, memory, devices …
    if endpoints:
        new_config["NetworkingConfig"] = {"EndpointsConfig": endpoints}

    api.stop(old_id, timeout=t)
    api.rename(old_id, aside)
    new_id: str | None = None
    try:
        created = api.create_container_from_config(new_config, name=name)
        new_id = str(created["Id"])
        for net, conf in extra_nets:
            api.connect_container_to_network(new_id, net, aliases=conf.get("Aliases"))
        api.start(new_id)
    except Exception as e:  # give the old container its name back and start it again
        if new_id is not None:
            with contextlib.suppress(Exception):
                api.remove_container(new_id, force=True)
        with contextlib.suppress(Exception):
            api.rename(old_id, name)
            if was_running:
                api.start(old_id)
        if isinstance(e, docker.errors.APIError):
            return _fail("recreate", f"re-creation failed, old container restored: {_api_reason(e)}"), old_id
        raise
    removed_old = True
    try:
        api.remove_container(old_id, force=True)
    except docker.errors.APIError:
        removed_old = False
    return _ok("recreate", "re-created from the inspected configuration and started",
               container=new_id, replaced=old_id, old_removed=removed_old), new_id


def prune_sync(
    client: Any,
    keep_ids: set[str],
    keep_image: str | None,
    containers: bool,
    images: bool,
    build: bool,
    labels: list[str],
    keep: Callable[[list[str], Mapping[str, str] | None], bool],
) -> dict[str, Any]:
    """Stopped containers (but the target: `keep(names, labels)`), dangling images (never `keep_image`),
    build cache; never a volume. Returns what was reclaimed."""
    api = client.api
    label_filter: dict[str, Any] = {"label": labels} if labels else {}
    report: dict[str, Any] = {"containers_removed": [], "images_removed": [], "build_cache_reclaimed": 0,
                              "space_reclaimed": 0, "kept_container": sorted(keep_ids), "kept_image": keep_image,
                              "volumes": "never pruned", "notes": []}
    if containers:
        stopped = {"status": ["exited", "created", "dead"], **label_filter}
        rows = api.containers(all=True, size=True, filters=stopped)
        for r in rows:
            names = [n.lstrip("/") for n in r.get("Names") or []]
            if r["Id"] in keep_ids or keep(names, r.get("Labels")):
                continue
            try:
                api.remove_container(r["Id"], v=False)  # v=False: never a volume, not even anonymous
            except docker.errors.APIError as e:
                report["notes"].append(f"container {names[:1]}: {_api_reason(e)}")
                continue
            report["containers_removed"].append(names[0] if names else r["Id"][:12])
            report["space_reclaimed"] += int(r.get("SizeRw") or 0)
    if images and not keep_image:
        report["notes"].append("images not pruned: the target's image is unknown (container never seen)")
    elif images:
        for img in api.images(filters={"dangling": True, **label_filter}):
            iid = str(img.get("Id"))
            if iid == keep_image:
                continue
            try:
                api.remove_image(iid, force=False)
            except docker.errors.APIError as e:  # in use by a container, or has children
                report["notes"].append(f"image {iid[:19]}: {_api_reason(e)}")
                continue
            report["images_removed"].append(iid)
            report["space_reclaimed"] += int(img.get("Size") or 0)
    if build:
        try:
            res = api.prune_builds()
            n = int((res or {}).get("SpaceReclaimed") or 0)
            report["build_cache_reclaimed"] = n
            report["space_reclaimed"] += n
        except docker.errors.DockerException as e:
            report["notes"].append(f"build cache: {_short(e)}")
    return report


def _secs(timeout_s: float) -> int:
    """Docker's stop grace is whole seconds; round up so a 0.5 s request is not a 0 s SIGKILL."""
    return max(0, int(-(-float(timeout_s) // 1)))


def _short(e: BaseException) -> str:
    return f"{e.__class__.__name__}: {str(e)[:200]}"


__all__ = ["OLD_SUFFIX", "prune_sync", "recreate_from_inspect", "state_from_inspect"]
