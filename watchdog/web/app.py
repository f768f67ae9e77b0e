"""Routes of the web edge: the status page, `/api/v1/…`, per-target `livez`/`readyz`, and the
authenticated writes (silence, ack, outbox retry/drop, run a step now, Alertmanager ingress).
Stage: operator edge.

Every write needs the bearer token (401 otherwise) and, except the Alertmanager webhook, a `reason`; it
is recorded in the incident's history with who (the token's name) and why. Without a configured token
the write routes do not exist (404). A request that is refused changes nothing: everything is checked
before the first write. Paths it does not know fall through (None) to the daemon's original GET routes.
This module never acts on a target itself: commands go to `Controls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import structlog

from watchdog.clock import Clock
from watchdog.config.models import AlertmanagerIngress
from watchdog.model import Finding
from watchdog.store import Store
from watchdog.web.auth import Token
from watchdog.web.http import Request, Response, json_reply
from watchdog.web.ingress import IngressError, findings_from
from watchdog.web.page import page_response
from watchdog.web.protocols import Controls, StateViews
from watchdog.web.state import Broadcaster, PageState, verdict

log = structlog.get_logger("watchdog.web")

MAX_SILENCE_S = 30 * 86400.0
MAX_STREAMS = 32  # open /api/v1/events streams (each costs a state build per change)
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_WRITE = re.compile(r"/api/v1/(?:silences|alerts/alertmanager|incidents/(\d+)/(ack|run-step)"
                    r"|outbox/(\d+)/(retry|drop))")


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def wants_json(req: Request) -> bool:
    """A client that asks for JSON and not HTML (the CLI, curl -H 'Accept: application/json')."""
    accept = req.header("accept").lower()
    return "application/json" in accept and "text/html" not in accept


def duration_s(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        d = float(v)
    elif isinstance(v, str) and (m := _DURATION.fullmatch(v)):
        d = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise Refused(422, "duration: give seconds or a string like 30m, 2h, 1d")
    if not 1.0 <= d <= MAX_SILENCE_S:
        raise Refused(422, f"duration: must be between 1 s and {int(MAX_SILENCE_S / 86400)} days")
    return d


class WebApp:
    """The request handler given to `api.HttpServer(app=…)`; it starts and stops its live feed with it."""

    def __init__(self, *, views: StateViews, controls: Controls, store: Store, clock: Clock,
                 token: Token | None, ingress: AlertmanagerIngress | None = None, period_s: float = 0.25) -> None:
        self.views = views
        self.controls = controls
        self.store = store
        self.clock = clock
        self.token = token
        self.ingress = ingress or AlertmanagerIngress()
        self.state = PageState(views=views, controls=controls, store=store, clock=clock, writes=token is not None)
        self.feed = Broadcaster(self.state.build, self.state.status, period_s=period_s)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.feed.run(), name="web-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self) -> None:
        """Something changed (an incident edge): push the page state now instead of at the next tick."""
        self.feed.poke()

    async def __call__(self, req: Request) -> Response | None:
        try:
            if req.method == "POST":
                return await self.post(req)
            return self.get(req)
        except Refused as e:
            return json_reply(e.status, {"error": str(e)},
                              {"WWW-Authenticate": 'Bearer realm="vllm-watchdog"'} if e.status == 401 else None)

    # ------------------------------------------------------------------ reads
    def get(self, req: Request) -> Response | None:
        path = req.path
        if path == "/":
            if wants_json(req):
                return json_reply(200, self.views.status())
            return page_response(self.state.build())
        if path == "/api/v1/state":
            return json_reply(200, self.state.build())
        if path == "/api/v1/events":
            if len(self.feed.subscribers) >= MAX_STREAMS:
                return json_reply(503, {"error": f"{MAX_STREAMS} event streams are open; poll /api/v1/state"})
            return Response(200, "text/event-stream; charset=utf-8", stream=self.feed.stream(),
                            headers={"X-Accel-Buffering": "no"})
        if m := re.fullmatch(r"/api/v1/incidents/(\d+)", path):
            doc = self.state.incident(int(m.group(1)))
            return json_reply(200, doc) if doc is not None else json_reply(404, {"error": "no such incident"})
        if m := re.fullmatch(r"/targets/([^/]+)/(livez|readyz)", path):
            return self.probe_endpoint(m.group(1), m.group(2))
        if path.startswith("/api/v1/"):
            return json_reply(404, {"error": "not found"})
        return None

    def probe_endpoint(self, name: str, which: str) -> Response:
        t = (self.state.status().get("targets") or {}).get(name)
        if t is None:
            return json_reply(404, {"error": f"no target {name!r}"})
        probes = dict(t.get("probes") or {})
        live, ready, why = verdict(probes)
        ok = live if which == "livez" else ready
        reason = ("liveness failing" if not live else "ok") if which == "livez" else why
        return json_reply(200 if ok else 503, {"target": name, which[:-1]: ok, "reason": reason, "probes": probes})

    # ------------------------------------------------------------------ writes
    async def post(self, req: Request) -> Response | None:
        m = _WRITE.fullmatch(req.path)
        if m is None:
            return json_reply(404, {"error": "not found"}) if req.path.startswith("/api/") else None
        if self.token is None:
            return json_reply(404, {"error": "not found (write endpoints need auth.token_file or auth.token_env)"})
        if not self.token.check(req.header("authorization")):
            raise Refused(401, "a valid bearer token is required (Authorization: Bearer <token>)")
        ctype = req.header("content-type").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise Refused(415, "send the body as application/json")
        if req.path == "/api/v1/alerts/alertmanager":
            return self.alertmanager(req.body)
        body = self.json_body(req.body)
        if req.path == "/api/v1/silences":
            return self.silence(body)
        if m.group(1):
            iid = int(m.group(1))
            return self.ack(iid, body) if m.group(2) == "ack" else await self.run_step(iid, body)
        return self.outbox(int(m.group(3)), m.group(4), body)

    def json_body(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "body must be a JSON object")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise Refused(422, "reason: required (say why, it goes into the incident history)")
        if len(reason) > 500:
            raise Refused(422, "reason: at most 500 characters")
        return body

    def who(self, reason: str, **extra: Any) -> dict[str, Any]:
        assert self.token is not None
        return {"by": self.token.name, "reason": reason.strip(), "via": "api", **extra}

    def silence(self, body: dict[str, Any]) -> Response:
        known = set(self.views.status().get("targets") or {})
        target = body.get("target")
        if not isinstance(target, str) or target not in known | {"*"}:
            raise Refused(422, f"target: must be one of {sorted(known)} or '*'")
        kind = body.get("kind")
        if kind is not None and (not isinstance(kind, str) or not _KIND.fullmatch(kind)):
            raise Refused(422, "kind: an incident kind like gpu_oom, or leave it out for every kind")
        dur = duration_s(body.get("duration", body.get("duration_s")))
        now = self.clock.time()
        reason = str(body["reason"]).strip()
        assert self.token is not None
        sid = self.store.add_silence(target=target, kind=kind, reason=reason, now=now, duration_s=dur,
                                     created_by=self.token.name)
        for inc in self.store.open_incidents(None if target == "*" else target):
            if kind is None or inc.kind == kind:
                self.store.add_event(inc.id, "silenced", self.who(reason, silence=sid, until=now + dur), now)
        log.info("silence added", silence=sid, target=target, kind=kind, by=self.token.name)
        self.poke()
        return json_reply(201, {"id": sid, "target": target, "kind": kind, "expires_at": now + dur})

    def open_incident(self, iid: int) -> Any:
        inc = self.store.incident(iid)
        if inc is None:
            raise Refused(404, f"no incident #{iid}")
        if inc.state != "open":
            raise Refused(409, f"incident #{iid} is {inc.state}")
        return inc

    def ack(self, iid: int, body: dict[str, Any]) -> Response:
        self.open_incident(iid)
        now = self.clock.time()
        self.store.add_event(iid, "acknowledged", self.who(str(body["reason"])), now)
        self.controls.acknowledge(iid)
        self.poke()
        return json_reply(200, {"id": iid, "acknowledged": True})

    async def run_step(self, iid: int, body: dict[str, Any]) -> Response:
        self.open_incident(iid)
        step = body.get("step")
        if step is not None and (not isinstance(step, str) or not _KIND.fullmatch(step)):
            raise Refused(422, "step: the action name of the next step (e.g. restart), or leave it out")
        now = self.clock.time()
        self.store.add_event(iid, "manual_step", self.who(str(body["reason"]), step=step), now)
        result = dict(await self.controls.run_step(iid, step))
        self.poke()
        return json_reply(200 if result.get("allowed") else 409, {"id": iid, **result})

    def outbox(self, row_id: int, op: str, body: dict[str, Any]) -> Response:
        rows = [r for s in ("dead", "pending") for r in self.store.outbox_rows(state=s, limit=10000) if r.id == row_id]
        if not rows:
            raise Refused(404, f"no pending or dead delivery #{row_id}")
        now = self.clock.time()
        done = self.store.outbox_retry([row_id], now) if op == "retry" else self.store.outbox_drop([row_id])
        self.store.add_event(rows[0].incident_id, f"outbox_{op}",
                             self.who(str(body["reason"]), delivery=row_id, receiver=rows[0].receiver), now)
        if op == "retry":
            self.controls.outbox_changed()
        self.poke()
        return json_reply(200, {"id": row_id, op: bool(done)})

    def changes(self, f: Finding) -> bool:
        """Whether applying `f` would change anything: a new or worse firing alert, or a resolved one
        whose incident is still open."""
        cur = self.store.open_incident_by_fp(f.fingerprint)
        if not f.active:
            return cur is not None
        return cur is None or f.severity.worse_than(cur.severity)

    def alertmanager(self, raw: bytes) -> Response:
        targets = {n: str(t.get("base_url") or "") for n, t in (self.views.status().get("targets") or {}).items()}
        try:
            findings = findings_from(raw, self.ingress, targets)
        except IngressError as e:
            raise Refused(e.status, str(e)) from None
        fresh = [f for f in findings if self.changes(f)]  # the same alert posted again changes nothing
        if fresh:
            self.controls.ingest(fresh)
        now = self.clock.time()
        touched = []
        for f in findings:
            inc = self.store.open_incident_by_fp(f.fingerprint) if f.active else None
            if inc is not None:
                touched.append(inc.id)
                if f in fresh and inc.occurrences == 1:
                    assert self.token is not None
                    self.store.add_event(inc.id, "ingested", {"by": self.token.name, "via": "alertmanager",
                                                              "alertname": f.evidence.get("alertname")}, now)
        self.poke()
        return json_reply(200, {"accepted": len(findings), "applied": len(fresh),
                                "firing": sum(f.active for f in findings),
                                "resolved": sum(not f.active for f in findings), "incidents": touched})

