"""Docker runtime adapter: find, watch and act on the vLLM container through the Docker Engine API.

Stage: observe + act (adapter). It reports the container's state, pushes its events (die, oom, kill,
start, restart, health_status …), reads its new log lines, and restarts / starts / stops / re-creates /
prunes exactly as asked. It must never decide anything (no thresholds, no retries of actions, no
policy), never block the event loop (every blocking docker-py call runs in a worker thread under a
concurrency cap; the events stream runs in its own thread on its own client), never prune the image the
target runs or any volume, and never log or return the container's environment values except through
`effective_env()`, which the caller asked for.

Errors: when the engine cannot be reached (socket missing, daemon down or hung) methods raise
`watchdog.errors.RuntimeUnavailable`; `events()` never raises and instead yields synthetic
`docker_unreachable` / `docker_reachable` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from watchdog.adapters.docker_logs import MAX_BUFFER, LogFollow, ts_ns
from watchdog.config.runtimes import DockerRuntimeSettings
from watchdog.errors import RuntimeUnavailable
from watchdog.model import ActionOutcome, ActionResult, LogLine, RunState, RuntimeEvent, RuntimeState

log = logging.getLogger(__name__)

T = TypeVar("T")

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"
OLD_SUFFIX = "-wdold-"  # name infix of a container kept aside during our own recreate

#: Event actions the stream is filtered to (docker fuzzy-matches "health_status: unhealthy").
WATCHED_ACTIONS = ("die", "oom", "kill", "health_status", "restart", "start", "stop", "destroy", "create", "rename")

_UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


# ----------------------------------------------------------------------------------------------- helpers


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


MAX_QUEUED_EVENTS = 1024  # per events() subscriber


class _Subscription:
    """One `events()` consumer: a thread following the stream, an asyncio queue fed from it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.dropped = 0
        self.stop = threading.Event()
        self.stream: Any = None
        self.client: Any = None
        self.thread: threading.Thread | None = None

    def post(self, kind: str, payload: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self.loop.call_soon_threadsafe(self._offer, (kind, payload))

    def _offer(self, item: tuple[str, Any]) -> None:
        """Bounded: past MAX_QUEUED_EVENTS waiting events a stalled consumer loses new events (counted in
        `dropped`; the next reconnect re-inspects), never the daemon's memory; control messages always pass."""
        if item[0] == "event" and self.queue.qsize() >= MAX_QUEUED_EVENTS:
            self.dropped += 1
            return
        self.queue.put_nowait(item)

    def close(self) -> None:
        self.stop.set()
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


# ----------------------------------------------------------------------------------------------- runtime


class DockerRuntime:
    """`watchdog.protocols.Runtime` for a container (by name, id, or compose project+service)."""

    kind: str = "docker"

    def __init__(
        self,
        settings: DockerRuntimeSettings,
        *,
        client_factory: Callable[[], Any] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._client_factory = client_factory or self._default_client
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._sem = asyncio.Semaphore(settings.max_concurrency)
        self._wall = wall
        # identity of the target, learnt from inspect and followed across re-creation
        self._id: str | None = settings.container_id
        self._name: str | None = settings.container
        self._image_id: str | None = None
        self._last_running: bool | None = None
        self._last_started: float | None = None
        # log cursor: exact ns of the newest line returned, and the lines already returned at that stamp
        self._log_follow: LogFollow | None = None
        self._subs: list[_Subscription] = []
        self._closed = False
        #: monotonic time of every events-stream connection attempt (observability; proves the backoff)
        self.stream_attempts: list[float] = []

    # ------------------------------------------------------------------ plumbing

    def _base_url(self) -> str:
        return self.settings.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def _default_client(self) -> Any:
        # never the CLI context (docker-py 7.2 follows it in from_env): explicit base_url, auto API version
        return docker.DockerClient(
            base_url=self._base_url(),
            version="auto",
            timeout=self.settings.api_timeout_s,
            max_pool_size=max(10, self.settings.max_concurrency),
        )

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(client)` in a worker thread under the concurrency cap; unreachable → RuntimeUnavailable.

        `docker.errors.APIError` (the daemon answered with an error, incl. NotFound) passes through.
        """
        if self._closed:
            raise RuntimeUnavailable("docker runtime is closed")
        async with self._sem:
            try:
                return await asyncio.to_thread(lambda: fn(self._get_client()))
            except docker.errors.APIError:
                raise
            except _UNREACHABLE as e:
                raise RuntimeUnavailable(f"docker engine at {self._base_url()} is unreachable: {_short(e)}") from e

    # ------------------------------------------------------------------ finding the container

    def _selector_desc(self) -> str:
        s = self.settings
        if s.compose_project and s.compose_service:
            return f"compose {s.compose_project}/{s.compose_service}"
        return s.container or s.container_id or "?"

    def _matches_compose(self, labels: Mapping[str, str] | None) -> bool:
        s = self.settings
        if not (s.compose_project and s.compose_service) or not labels:
            return False
        return (
            labels.get(COMPOSE_PROJECT) == s.compose_project
            and labels.get(COMPOSE_SERVICE) == s.compose_service
            and str(labels.get(COMPOSE_ONEOFF, "False")).lower() != "true"
        )

    def _resolve_sync(self, client: Any) -> dict[str, Any] | None:
        """Inspect the target: by the id we follow, else by name, else by compose labels. None = missing."""
        api = client.api
        s = self.settings
        tried: list[str] = []
        for ref in (self._id, self._name, s.container_id, s.container):
            if not ref or ref in tried:
                continue
            tried.append(ref)
            try:
                attrs: dict[str, Any] = api.inspect_container(ref)
            except docker.errors.NotFound:
                continue
            name = str(attrs.get("Name") or "").lstrip("/")
            if OLD_SUFFIX in name and ref != self._id:
                continue  # a container we set aside during a recreate is never the target
            self._learn(attrs)
            return attrs
        if s.compose_project and s.compose_service:
            rows = api.containers(
                all=True,
                filters={"label": [f"{COMPOSE_PROJECT}={s.compose_project}", f"{COMPOSE_SERVICE}={s.compose_service}"]},
            )
            rows = [r for r in rows if self._matches_compose(r.get("Labels"))]
            rows = [r for r in rows if not any(OLD_SUFFIX in n for n in r.get("Names") or [])] or rows
            # prefer a running one, then the newest
            rows.sort(key=lambda r: (r.get("State") == "running", int(r.get("Created") or 0)), reverse=True)
            for r in rows:
                try:
                    attrs = api.inspect_container(r["Id"])
                except docker.errors.NotFound:
                    continue
                self._learn(attrs)
                return attrs
        return None

    def _learn(self, attrs: Mapping[str, Any]) -> None:
        self._id = str(attrs.get("Id") or self._id)
        name = str(attrs.get("Name") or "").lstrip("/")
        if name and OLD_SUFFIX not in name:
            self._name = name
        self._image_id = str(attrs.get("Image") or "") or self._image_id

    async def inspect(self) -> dict[str, Any] | None:
        """Raw `docker inspect` of the target (None when no such container exists)."""
        return await self._call(self._resolve_sync)

    async def _require(self, action: str) -> dict[str, Any] | ActionResult:
        attrs = await self.inspect()
        if attrs is None:
            return _fail(action, f"container {self._selector_desc()} not found")
        return attrs

    @property
    def container_id(self) -> str | None:
        """The id currently followed (changes after a re-creation)."""
        return self._id

    @property
    def container_name(self) -> str | None:
        return self._name

    # ------------------------------------------------------------------ Runtime protocol: observe

    async def state(self) -> RuntimeState:
        attrs = await self.inspect()
        if attrs is None:
            return RuntimeState(state=RunState.MISSING, detail=f"container {self._selector_desc()} not found")
        st = state_from_inspect(attrs)
        self._last_running = st.state in (RunState.RUNNING, RunState.PAUSED, RunState.RESTARTING)
        self._last_started = st.started_at
        return st

    async def effective_env(self) -> Mapping[str, str]:
        attrs = await self.inspect()
        if attrs is None:
            raise RuntimeUnavailable(f"container {self._selector_desc()} not found: no environment to read")
        return _env_list_to_dict((attrs.get("Config") or {}).get("Env"))

    async def read_logs(self, max_lines: int = 2000) -> list[LogLine]:
        """Lines new since the last call (the newest `max_lines` at most). While the container runs they come
        from one followed log stream (`LogFollow`, its own thread and client: no call per read); when there is
        none (first read, or the run it followed ended) the backlog after the last line seen (or since the
        run's start) is read once and a new stream is started after it."""
        max_lines = max(1, int(max_lines))
        f = self._log_follow
        if f is not None and f.alive:
            return _newest(f.drain(), max_lines)
        attrs = await self.inspect()
        if attrs is None:
            return _newest(f.drain(), max_lines) if f is not None else []
        cid = str(attrs["Id"])
        state = attrs.get("State") or {}
        same = f is not None and f.cid == cid
        got = f.drain() if f is not None and same else []
        after = f.last_ns if f is not None and same else None
        if f is not None:
            await asyncio.to_thread(f.close)
            self._log_follow = None
        started = _parse_time(state.get("StartedAt"))
        since_ns = None if started is None else int(started * 1e9) - 1
        backlog = await self._log_backlog(cid, after, since_ns, max_lines)
        got += backlog
        last = max([after or 0, *(ns for ns, _ in got)]) or None
        if state.get("Running") and not self._closed:
            self._log_follow = LogFollow(self._stream_client, cid, after_ns=last, since_ns=since_ns,
                                         tail=max_lines).start()
        return _newest(got, max_lines)

    async def _log_backlog(self, cid: str, after_ns: int | None, since_ns: int | None,
                           max_lines: int) -> list[tuple[int, str]]:
        """One bounded, non-following read: lines after `after_ns` (else the newest `max_lines` of the run)."""
        start = after_ns if after_ns is not None else since_ns

        def fetch(client: Any) -> bytes:
            kw: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True,
                                  "tail": max_lines if after_ns is None else MAX_BUFFER}
            if start is not None and start > 0:
                kw["since"] = start / 1e9
            out: bytes = client.api.logs(cid, **kw)
            return out

        try:
            raw = await self._call(fetch)
        except docker.errors.NotFound:
            return []
        except docker.errors.APIError as e:
            raise RuntimeUnavailable(f"cannot read logs of {self._selector_desc()}: {_api_reason(e)}") from e
        out: list[tuple[int, str]] = []
        for line in raw.decode("utf-8", errors="replace").splitlines():
            stamp, _, text = line.partition(" ")
            ns = ts_ns(stamp)
            if ns is not None and (after_ns is None or ns > after_ns):
                out.append((ns, text))
        return out

    def _stream_client(self) -> Any:
        """A client of its own for one long-lived log stream (never a slot of the actions' pool), without a
        read timeout: a quiet server is not a broken stream (the thread ends when the stream is closed)."""
        if self._client_factory != self._default_client:
            return self._client_factory()
        return docker.DockerClient(base_url=self._base_url(), version="auto", timeout=None)

    # ------------------------------------------------------------------ Runtime protocol: act

    async def start(self) -> ActionResult:
        attrs = await self._require("start")
        if isinstance(attrs, ActionResult):
            return attrs
        cid = str(attrs["Id"])
        if (attrs.get("State") or {}).get("Running"):
            return _ok("start", "container already running", container=cid)
        try:
            await self._call(lambda c: c.api.start(cid))
        except docker.errors.APIError as e:
            return _fail("start", _api_reason(e), container=cid)
        return _ok("start", "container started", container=cid)

    async def stop(self, timeout_s: float = 10.0) -> ActionResult:
        attrs = await self._require("stop")
        if isinstance(attrs, ActionResult):
            return attrs
        cid, t = str(attrs["Id"]), _secs(timeout_s)
        try:
            await self._call(lambda c: c.api.stop(cid, timeout=t))
        except docker.errors.APIError as e:
            return _fail("stop", _api_reason(e), container=cid)
        return _ok("stop", f"container stopped (SIGTERM, SIGKILL after {t} s)", container=cid)

    async def restart(self, timeout_s: float = 10.0) -> ActionResult:
        attrs = await self._require("restart")
        if isinstance(attrs, ActionResult):
            return attrs
        cid, t = str(attrs["Id"]), _secs(timeout_s)
        try:
            await self._call(lambda c: c.api.restart(cid, timeout=t))
        except docker.errors.APIError as e:
            return _fail("restart", _api_reason(e), container=cid)
        return _ok("restart", f"container restarted (stop grace {t} s, then SIGKILL)", container=cid)

    async def recreate(self, env: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> ActionResult:
        attrs = await self._require("recreate")
        if isinstance(attrs, ActionResult):
            return attrs
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        compose_cmd = self._compose_argv(labels)
        if compose_cmd is not None:
            res = await self._recreate_compose(compose_cmd, env, timeout_s)
        else:
            try:
                res = await self._call(lambda c: self._recreate_sync(c, attrs, env or {}, _secs(timeout_s)))
            except docker.errors.APIError as e:
                res = _fail("recreate", _api_reason(e))
        if not res.ok or not env:
            return res
        eff = await self.effective_env()
        wrong = sorted(k for k, v in env.items() if eff.get(k) != v)
        if wrong:
            return _fail("recreate", f"re-created, but the container does not have the new values of {wrong}",
                         **dict(res.details))
        return _ok("recreate", res.reason + "; new environment verified by inspect",
                   **{**dict(res.details), "env_keys": sorted(env)})

    def _compose_argv(self, labels: Mapping[str, str]) -> list[str] | None:
        s = self.settings
        if s.compose_file is None or not labels.get(COMPOSE_PROJECT) or not labels.get(COMPOSE_SERVICE):
            return None
        if shutil.which(s.compose_command[0]) is None:
            return None
        try:
            probe = subprocess.run([*s.compose_command, "version"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode != 0:
            return None
        return [*s.compose_command, "-f", str(s.compose_file), "-p", labels[COMPOSE_PROJECT], "up", "-d",
                "--force-recreate", "--no-deps", labels[COMPOSE_SERVICE]]

    async def _recreate_compose(self, argv: list[str], env: Mapping[str, str] | None, timeout_s: float) -> ActionResult:
        argv = [*argv[:-1], "--timeout", str(_secs(timeout_s)), argv[-1]]
        proc_env = {**os.environ, **(env or {})}  # compose interpolates ${VAR} from its own environment
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=proc_env
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s + self.settings.api_timeout_s + 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return _fail("recreate", "docker compose up --force-recreate timed out")
        self._id = None  # the service has a new container: find it again by its labels
        if proc.returncode != 0:
            return _fail("recreate", f"docker compose exited {proc.returncode}: {out.decode(errors='replace')[-300:]}")
        attrs = await self.inspect()
        return _ok("recreate", "re-created with docker compose up -d --force-recreate",
                   container=None if attrs is None else attrs.get("Id"))

    def _recreate_sync(self, client: Any, attrs: dict[str, Any], env: Mapping[str, str], t: int) -> ActionResult:
        """Create a twin from the inspected config with `env` merged; keep the old one aside until it runs."""
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
            self._id = old_id
            if isinstance(e, docker.errors.APIError):
                return _fail("recreate", f"re-creation failed, old container restored: {_api_reason(e)}")
            raise
        self._id = new_id
        removed_old = True
        try:
            api.remove_container(old_id, force=True)
        except docker.errors.APIError:
            removed_old = False
        return _ok("recreate", "re-created from the inspected configuration and started",
                   container=new_id, replaced=old_id, old_removed=removed_old)

    # ------------------------------------------------------------------ prune

    async def prune(
        self,
        *,
        build_cache: bool = True,
        containers: bool = True,
        images: bool = True,
        labels: list[str] | None = None,
    ) -> dict[str, Any]:
        """Reclaim disk: stopped containers except the target, dangling images only (never the target's image),
        build cache. Volumes are never touched (named ones hold the model cache). `labels` ("key" or "key=value")
        restrict containers and images to those carrying them. Returns what was reclaimed."""
        attrs = await self.inspect()
        keep_ids = {x for x in (self._id, None if attrs is None else attrs.get("Id")) if x}
        keep_image = self._image_id if attrs is None else str(attrs.get("Image") or "") or self._image_id
        return await self._call(
            lambda c: self._prune_sync(c, keep_ids, keep_image, containers, images, build_cache, list(labels or []))
        )

    def _prune_sync(
        self,
        client: Any,
        keep_ids: set[str],
        keep_image: str | None,
        containers: bool,
        images: bool,
        build: bool,
        labels: list[str],
    ) -> dict[str, Any]:
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
                is_target = r["Id"] in keep_ids or (self._name and self._name in names)
                if is_target or self._matches_compose(r.get("Labels")):
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

    # ------------------------------------------------------------------ events

    def _event_filters(self) -> dict[str, Any]:
        s = self.settings
        f: dict[str, Any] = {"type": ["container"], "event": list(WATCHED_ACTIONS)}
        if s.compose_project and s.compose_service:
            f["label"] = [f"{COMPOSE_PROJECT}={s.compose_project}", f"{COMPOSE_SERVICE}={s.compose_service}"]
        else:
            f["container"] = [x for x in {self._name, self._id, s.container, s.container_id} if x]
        return f

    def _is_target_event(self, ev: Mapping[str, Any]) -> bool:
        """Docker's `container` filter is a prefix match ('vllm' matches 'vllm2'): check exactly here."""
        actor = ev.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        cid = str(actor.get("ID") or ev.get("id") or "")
        name = str(attrs.get("name") or "")
        if self.settings.compose_project and self.settings.compose_service:
            return self._matches_compose(attrs) and OLD_SUFFIX not in name
        if cid and cid == self._id:
            return True
        if OLD_SUFFIX in name:
            return False
        wanted = {x for x in (self._name, self.settings.container) if x}
        if name in wanted:
            return True
        sid = self.settings.container_id
        return bool(sid and cid.startswith(sid))

    def _pump(self, sub: _Subscription, since_ns: int) -> None:
        """Thread body: follow the stream; on its end or a failure, back off and reconnect with `since`."""
        s = self.settings
        delay = s.reconnect_initial_s
        connected_once = False
        while not sub.stop.is_set():
            began = time.monotonic()
            self.stream_attempts.append(began)
            del self.stream_attempts[:-100]
            got_any = False
            try:
                client = docker.DockerClient(base_url=self._base_url(), version="auto", timeout=s.api_timeout_s)
                sub.client = client
                since = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
                stream = client.api.events(decode=True, filters=self._event_filters(), since=since)
                sub.stream = stream
                sub.post("connected", connected_once)
                connected_once = True
                for ev in stream:
                    got_any = True
                    tn = int(ev.get("timeNano") or int(ev.get("time") or 0) * 1_000_000_000)
                    since_ns = max(since_ns, tn)
                    sub.post("event", ev)
                    if sub.stop.is_set():
                        break
                if not sub.stop.is_set():
                    sub.post("ended", None)
            except _UNREACHABLE as e:
                sub.post("unreachable", _short(e))
            finally:
                client, sub.client, sub.stream = sub.client, None, None
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            if sub.stop.is_set():
                break
            # never a tight loop: a stream that lived a while or delivered events resets the backoff
            if got_any or time.monotonic() - began > 10:
                delay = s.reconnect_initial_s
            sub.stop.wait(delay)
            delay = min(delay * 2, s.reconnect_max_s)
        sub.post("closed", None)

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """Events of the target, pushed from the engine; reconnects on its own and never raises."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        sub = _Subscription(loop)
        self._subs.append(sub)
        start_ns = int(self._wall() * 1e9)
        sub.thread = threading.Thread(target=self._pump, args=(sub, start_ns), name="docker-events", daemon=True)
        sub.thread.start()
        reachable = True
        last_ns = start_ns
        seen_at_last: set[tuple[str, str]] = set()
        try:
            while True:
                kind, payload = await sub.queue.get()
                if kind == "closed":
                    return
                if kind == "unreachable":
                    if reachable:
                        reachable = False
                        yield RuntimeEvent("docker_unreachable", self._wall(), attributes={"error": str(payload)})
                    continue
                if kind == "connected":
                    was_down = not reachable
                    if was_down:
                        reachable = True
                        yield RuntimeEvent("docker_reachable", self._wall())
                    if payload or was_down:  # a reconnect: re-inspect, report what changed while we were away
                        for synthetic in await self._reinspect_events():
                            yield synthetic
                    elif self._last_running is None:  # first connection: the baseline for later re-inspects
                        with contextlib.suppress(RuntimeUnavailable):
                            await self.state()
                    continue
                if kind != "event":
                    continue
                ev: dict[str, Any] = payload
                tn = int(ev.get("timeNano") or int(ev.get("time") or 0) * 1_000_000_000)
                key = (str((ev.get("Actor") or {}).get("ID")), str(ev.get("Action")))
                if tn < last_ns or (tn == last_ns and key in seen_at_last):
                    continue  # already delivered before a reconnect with since=
                if tn > last_ns:
                    last_ns, seen_at_last = tn, set()
                seen_at_last.add(key)
                out = self._translate(ev)
                if out is not None:
                    yield out
        finally:
            sub.close()
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)

    def _translate(self, ev: Mapping[str, Any]) -> RuntimeEvent | None:
        if not self._is_target_event(ev):
            return None
        actor = ev.get("Actor") or {}
        attrs: dict[str, str] = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        cid = str(actor.get("ID") or "")
        action = str(ev.get("Action") or "")
        kind, _, arg = action.partition(":")
        kind = kind.strip()
        if kind in ("create", "start") and cid and cid != self._id:
            self._id = cid  # re-created (compose up, someone else, or us): follow the new container
            self._name = attrs.get("name") or self._name
        elif kind == "destroy" and cid == self._id:
            self._id = None
        elif kind == "rename" and cid == self._id and OLD_SUFFIX not in attrs.get("name", ""):
            self._name = attrs.get("name") or self._name
        keep = {"name", "image", "exitCode", "signal", COMPOSE_PROJECT, COMPOSE_SERVICE, "oldName"}
        out_attrs = {k: v for k, v in attrs.items() if k in keep}
        out_attrs["id"] = cid
        if arg.strip():
            out_attrs[kind] = arg.strip()
        exit_code: int | None = None
        if kind == "die":
            with contextlib.suppress(ValueError):
                exit_code = int(attrs.get("exitCode", ""))
            self._last_running = False
        elif kind == "start":
            self._last_running, self._last_started = True, None
        at = int(ev.get("timeNano") or 0) / 1e9 or float(ev.get("time") or self._wall())
        return RuntimeEvent(kind=kind, at=at, exit_code=exit_code, attributes=out_attrs)

    async def _reinspect_events(self) -> list[RuntimeEvent]:
        """After a reconnect: what happened while the stream was down (dockerd's event log does not
        survive its restart). A container that was running and is not → synthetic die; a new run → start."""
        before_running, before_started = self._last_running, self._last_started
        try:
            st = await self.state()
        except RuntimeUnavailable:
            return []
        attrs = {"synthetic": "reinspect", "id": st.id or ""}
        running = st.state in (RunState.RUNNING, RunState.PAUSED, RunState.RESTARTING)
        out: list[RuntimeEvent] = []
        if before_running and not running:
            out.append(RuntimeEvent("die", self._wall(), exit_code=st.exit_code, attributes=attrs))
            if st.oom_killed:
                out.append(RuntimeEvent("oom", self._wall(), attributes=attrs))
        elif running and st.started_at is not None and st.started_at != before_started and before_started is not None:
            out.append(RuntimeEvent("start", self._wall(), attributes=attrs))
        return out

    async def close(self) -> None:
        self._closed = True
        follow, self._log_follow = self._log_follow, None
        if follow is not None:
            await asyncio.to_thread(follow.close)
        for sub in list(self._subs):
            sub.close()
            sub.post("closed", None)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)


def _secs(timeout_s: float) -> int:
    """Docker's stop grace is whole seconds; round up so a 0.5 s request is not a 0 s SIGKILL."""
    return max(0, int(-(-float(timeout_s) // 1)))


def _short(e: BaseException) -> str:
    return f"{e.__class__.__name__}: {str(e)[:200]}"


__all__ = ["DockerRuntime", "DockerRuntimeSettings", "state_from_inspect"]
