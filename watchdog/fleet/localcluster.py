"""A throwaway etcd cluster on loopback, for tests, benches and demos. Stage: fleet (test support).

Starts N `etcd` members (Debian's `etcd-server` binary) on distinct client/peer ports with temporary
data dirs, waits (bounded) until the cluster answers a linearizable read, and stops members on demand
(to build a minority). It must never be used by the daemon itself, never bind anything but 127.0.0.1,
and never leave a process or a data dir behind after `close()`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held open together while choosing, so never the same)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class ClientTls:
    """Client-facing TLS for the members: server cert/key, and the CA that client certs must chain to."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    client_cert: Path  # a client cert + key the health check presents
    client_key: Path


@dataclass
class Member:
    """One etcd member: its name, ports, data dir and (while running) its process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class LocalEtcdCluster:
    """N etcd members on loopback. `start()` is bounded by `start_timeout_s`; `close()` always cleans up."""

    def __init__(self, size: int = 3, *, binary: str = "etcd", start_timeout_s: float = 30.0,
                 heartbeat_ms: int = 100, election_ms: int = 1000, tls: ClientTls | None = None) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary!r} not found on PATH (Debian: apt-get install etcd-server)")
        self.binary = path
        self.start_timeout_s = start_timeout_s
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.root = Path(tempfile.mkdtemp(prefix="vwd-etcd-"))
        ports = free_ports(2 * size)
        self.members = [
            Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.root / f"m{i}.etcd", self.root / f"m{i}.log")
            for i in range(size)
        ]
        self.token = f"vwd-{ports[0]}"
        self.tls = tls
        if tls is not None:
            for m in self.members:
                m.scheme = "https"

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _cmd(self, m: Member, state: str) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            "--logger", "zap", "--log-outputs", "stderr",
            *([] if self.tls is None else [
                "--cert-file", str(self.tls.cert_file), "--key-file", str(self.tls.key_file),
                "--trusted-ca-file", str(self.tls.ca_file), "--client-cert-auth"]),
        ]

    def _spawn(self, m: Member, state: str) -> None:
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(self._cmd(m, state), stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def start(self) -> LocalEtcdCluster:
        """Start every member and wait until a linearizable read succeeds (or raise, after cleaning up)."""
        for m in self.members:
            self._spawn(m, "new")
        try:
            self.wait_healthy(self.members)
        except BaseException:
            self.close()
            raise
        return self

    def wait_healthy(self, members: list[Member], timeout_s: float | None = None) -> None:
        """Wait until each given member answers a linearizable range (it has a leader and a quorum)."""
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        pending = list(members)
        while pending:
            m = pending[0]
            if m.proc is not None and m.proc.poll() is not None:
                raise RuntimeError(f"etcd {m.name} exited with {m.proc.returncode}: {self.log_tail(m)}")
            if _linearizable_ok(m.client_url, self._ssl_context()):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {m.name} not healthy in time: {self.log_tail(m)}")
            time.sleep(0.05)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
        ctx.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return ctx

    def stop(self, m: Member) -> None:
        """Stop one member (SIGTERM, then SIGKILL after 5 s); its data dir stays so it can rejoin."""
        if m.proc is None:
            return
        m.proc.terminate()
        try:
            m.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(timeout=5)
        m.proc = None

    def restart(self, m: Member) -> None:
        """Start a stopped member again with its old data dir."""
        if m.proc is None:
            self._spawn(m, "existing")

    def log_tail(self, m: Member, chars: int = 600) -> str:
        with contextlib.suppress(OSError):
            return m.log_path.read_text(errors="replace")[-chars:]
        return ""

    def close(self) -> None:
        """Stop every member and remove the data dirs."""
        for m in self.members:
            with contextlib.suppress(Exception):
                self.stop(m)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalEtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _linearizable_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    body = json.dumps({"key": "AA==", "limit": 1}).encode()  # key "\0": a cheap linearizable range
    req = urllib.request.Request(f"{url}/v3/kv/range", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=1.0, context=ctx) as resp:
            return bool(resp.status == 200 and "header" in json.loads(resp.read()))
    except (OSError, ValueError):
        return False
