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
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from watchdog.adapters.docker_events import (
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    DockerEvents,
    _Subscription,
)
from watchdog.adapters.docker_logs import MAX_BUFFER, LogFollow, ts_ns
from watchdog.adapters.docker_ops import (
    OLD_SUFFIX,
    _api_reason,
    _env_list_to_dict,
    _fail,
    _newest,
    _ok,
    _parse_time,
    _secs,
    _short,
    prune_sync,
    recreate_from_inspect,
    state_from_inspect,
)
from watchdog.config.runtimes import DockerRuntimeSettings
from watchdog.errors import RuntimeUnavailable
from watchdog.model import ActionResult, LogLine, RunState, RuntimeState

log = logging.getLogger(__name__)

T = TypeVar("T")




_UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


# ----------------------------------------------------------------------------------------------- runtime


class DockerRuntime(DockerEvents):
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
                res, self._id = await self._call(lambda c: recreate_from_inspect(c, attrs, env or {}, _secs(timeout_s)))
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
            lambda c: prune_sync(c, keep_ids, keep_image, containers, images, build_cache, list(labels or []),
                                 self._keeps)
        )

    def _keeps(self, names: list[str], labels: Mapping[str, str] | None) -> bool:
        """A container prune must leave alone: the target, by name or by its compose labels."""
        return bool(self._name and self._name in names) or self._matches_compose(labels)

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


__all__ = ["DockerRuntime", "DockerRuntimeSettings", "state_from_inspect"]
