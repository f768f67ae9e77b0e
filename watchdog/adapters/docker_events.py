"""Docker runtime adapter, its events: one thread per `events()` consumer follows the engine's event stream
on its own client, reconnects with back-off, re-inspects after a gap, and turns engine events into
RuntimeEvents. Stage: observe (adapter).

`DockerEvents` is the part of `DockerRuntime` that pushes events; it must never block the event loop, never
raise from `events()` (an unreachable engine is the synthetic `docker_unreachable` event), and never hold
more than `MAX_QUEUED_EVENTS` waiting events per consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from watchdog.adapters.docker_logs import LogFollow
from watchdog.adapters.docker_ops import OLD_SUFFIX, _short
from watchdog.config.runtimes import DockerRuntimeSettings
from watchdog.errors import RuntimeUnavailable
from watchdog.model import RunState, RuntimeEvent, RuntimeState

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"

#: Event actions the stream is filtered to (docker fuzzy-matches "health_status: unhealthy").
WATCHED_ACTIONS = ("die", "oom", "kill", "health_status", "restart", "start", "stop", "destroy", "create", "rename")

MAX_QUEUED_EVENTS = 1024  # per events() subscriber

_UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


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



class DockerEvents:
    """The events half of `DockerRuntime` (a mixin: the runtime provides the attributes declared here)."""

    settings: DockerRuntimeSettings
    _wall: Callable[[], float]
    _id: str | None
    _name: str | None
    _last_running: bool | None
    _last_started: float | None
    _log_follow: LogFollow | None
    _subs: list[_Subscription]
    _closed: bool
    stream_attempts: list[float]

    def _base_url(self) -> str:
        raise NotImplementedError

    def _matches_compose(self, labels: Mapping[str, str] | None) -> bool:
        raise NotImplementedError

    async def state(self) -> RuntimeState:
        raise NotImplementedError

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

