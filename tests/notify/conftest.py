"""Shared fixtures for the notify tests: notifications, a real loopback HTTP receiver, free ports."""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import structlog

from watchdog.clock import FakeClock
from watchdog.model import EventKind, Notification, Severity
from watchdog.secrets import REGISTRY


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_notification(
    event: EventKind = EventKind.OPENED,
    severity: Severity = Severity.P0,
    *,
    id: str = "n-42-opened",
    kind: str = "service_down",
    target: str = "vllm-0",
    details: dict[str, Any] | None = None,
    resolved_at: float | None = None,
    created_at: float = 1_800_000_100.0,
    opened_at: float = 1_800_000_000.0,
    **kw: Any,
) -> Notification:
    return Notification(
        id=id,
        event=event,
        incident_id=42,
        fingerprint=kw.pop("fingerprint", "3f1c2a9be0d14c55a0e2f6b1"),
        target=target,
        kind=kind,
        severity=severity,
        title="vLLM server down",
        summary="GET /health: connection refused",
        created_at=created_at,
        opened_at=opened_at,
        resolved_at=resolved_at,
        labels=kw.pop("labels", {"gpu": "0"}),
        details=details
        if details is not None
        else {
            "probes": [{"probe": "liveness", "status": "fail", "summary": "connection refused"}],
            "log_line": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            "log_pattern": "gpu_oom",
            "metrics": {"vllm:gpu_cache_usage_perc": 0.99},
            "action": {"name": "restart", "outcome": "ok", "reason": "container restarted"},
            "outcome": "server answered /health after 41 s",
            "runbook": "Lower --gpu-memory-utilization to 0.85 and restart.",
            "runbook_url": "https://runbooks.example/vllm#gpu_oom",
        },
        grouped=kw.pop("grouped", ({"kind": "not_ready", "severity": "P1", "summary": "/v1/models failed"},)),
        status_url=kw.pop("status_url", "http://127.0.0.1:9321/"),
        **kw,
    )


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers scripted replies."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.replies: queue.Queue[Reply] = queue.Queue()
        self.default = Reply()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.requests.append(
                    Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                try:
                    reply = outer.replies.get_nowait()
                except queue.Empty:
                    reply = outer.default
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        for r in replies:
            self.replies.put(r)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as c:
        yield c


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_wall=1_800_000_200.0)


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    REGISTRY.clear()
    yield
    REGISTRY.clear()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """structlog events captured with the redaction processor in the chain."""
    from watchdog.secrets import redact_processor

    cap = structlog.testing.LogCapture()
    structlog.configure(processors=[redact_processor, cap], cache_logger_on_first_use=False)
    try:
        yield cap.entries
    finally:
        structlog.reset_defaults()
