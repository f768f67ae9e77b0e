"""etcd adapter: the fleet key-value contract (`watchdog.fleet.kv.FleetKV`, structurally) over etcd's v3 JSON gateway.
Stage: adapter (touches the world).

Uses `etcd3gw` (blocking, requests-based) in a small private thread pool, so the event loop never waits
on etcd: every call is bounded by `timeout_s` per endpoint and by an overall deadline, and failure to
get a quorum answer raises `CoordinatorUnavailable`. Reads are linearizable (never `serializable`),
so a member cut off in a minority times out instead of serving stale slots. On a connection error or
timeout the next endpoint is tried; the last endpoint that answered is tried first next time. This
module must never cache a grant, retry a write on its own beyond the endpoint failover (a retried
conditional create is safe: it fails its compare), or log a key's value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions as etcd_exc
from etcd3gw.client import Etcd3Client

from watchdog.errors import CoordinatorUnavailable

T = TypeVar("T")
API_PATH = "/v3/"  # etcd >= 3.4 (Debian bookworm ships 3.4.23); skips etcd3gw's /version discovery call


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One stored key: its value, the lease it is bound to (0 = none) and its revisions."""

    key: str
    value: str
    lease: int
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Keys under a prefix, read at store revision `revision` (the basis for a later guarded write)."""

    kvs: tuple[KeyValue, ...]
    revision: int


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode(errors="replace")


def _b64_prefix_end(prefix: str) -> str:
    """etcd's range end for "every key starting with prefix" (last byte + 1), base64-encoded."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(key=_unb64(d["key"]), value=_unb64(d.get("value", "")), lease=int(d.get("lease", 0)),
                    create_revision=int(d.get("create_revision", 0)), mod_revision=int(d.get("mod_revision", 0)))


class _LeaseNotFound(Exception):
    """etcd answered that the lease does not exist (expired or revoked)."""


class EtcdKV:
    """`FleetKV` on an etcd cluster. `endpoints` are URLs (http:// or https://, same TLS files for all)."""

    def __init__(self, endpoints: Sequence[str], *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, timeout_s: float = 2.0, max_threads: int = 4) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.timeout_s = timeout_s
        self._clients = [self._client(u, ca_file, cert_file, key_file) for u in endpoints]
        self._preferred = 0
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="etcd")

    def _client(self, url: str, ca: str | None, cert: str | None, key: str | None) -> Etcd3Client:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"etcd endpoint must be http(s)://host:port, got {url!r}")
        session = requests.Session()
        session.trust_env = False  # never route etcd through an HTTP proxy from the environment
        if ca:
            session.verify = ca
        if cert and key:
            session.cert = (cert, key)
        return Etcd3Client(host=u.hostname, port=u.port or 2379, protocol=u.scheme, timeout=self.timeout_s,
                           api_path=API_PATH, session=session)

    # ------------------------------------------------------------------ plumbing
    def _post_failover(self, path: str, body: dict[str, Any]) -> Any:
        """Blocking: POST to the preferred endpoint, then the others; raise when none answered."""
        errors: list[str] = []
        n = len(self._clients)
        start = self._preferred
        for i in range(n):
            idx = (start + i) % n
            c = self._clients[idx]
            try:
                out = c.post(c.get_url(path), json=body)
            except (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError) as e:
                errors.append(f"{c.base_url}: {e.__class__.__name__}")
                continue
            except etcd_exc.Etcd3Exception as e:  # 5xx from the gateway: no leader, request timed out…
                if "lease not found" in (e.detail_text or ""):
                    raise _LeaseNotFound() from e  # a definite answer from the quorum, not a failure
                errors.append(f"{c.base_url}: {(e.detail_text or e.__class__.__name__)[:120]}")
                continue
            except requests.RequestException as e:
                errors.append(f"{c.base_url}: {e.__class__.__name__}")
                continue
            self._preferred = idx
            return out
        raise CoordinatorUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    async def _call(self, path: str, body: dict[str, Any], parse: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self._post_failover, path, body)
        deadline = self.timeout_s * min(2, len(self._clients)) + 0.5
        try:
            raw = await asyncio.wait_for(fut, deadline)
        except TimeoutError as e:
            raise CoordinatorUnavailable(f"etcd did not answer within {deadline:.1f} s") from e
        except _LeaseNotFound:
            if path.startswith("/lease/keepalive") or path.startswith("/kv/lease/revoke"):
                raise
            raise CoordinatorUnavailable("etcd: requested lease not found") from None
        return parse(raw)

    # ------------------------------------------------------------------ FleetKV
    async def grant(self, ttl_s: int) -> int:
        return await self._call("/lease/grant", {"TTL": int(ttl_s), "ID": 0}, lambda r: int(r["ID"]))

    async def keepalive(self, lease: int) -> int:
        try:
            return await self._call("/lease/keepalive", {"ID": lease},
                                    lambda r: int((r.get("result") or {}).get("TTL", -1)))
        except _LeaseNotFound:
            return -1

    async def revoke(self, lease: int) -> None:
        def ok(r: Any) -> None:
            return None

        with contextlib.suppress(_LeaseNotFound):  # already expired: nothing to revoke
            await self._call("/kv/lease/revoke", {"ID": lease}, ok)

    async def get_prefix(self, prefix: str) -> RangeResult:
        body = {"key": _b64(prefix), "range_end": _b64_prefix_end(prefix), "sort_order": "ASCEND",
                "sort_target": "KEY"}
        return await self._call("/kv/range", body, lambda r: RangeResult(
            kvs=tuple(_kv(kv) for kv in r.get("kvs", ())), revision=int(r["header"]["revision"])))

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return await self._call("/kv/put", body, lambda r: int(r["header"]["revision"]))

    async def create(self, key: str, value: str, lease: int = 0, *, unchanged_prefix: str | None = None,
                     since_revision: int = 0) -> bool:
        compare: list[dict[str, Any]] = [
            {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
        if unchanged_prefix is not None:
            compare.append({"key": _b64(unchanged_prefix), "range_end": _b64_prefix_end(unchanged_prefix),
                            "target": "MOD", "result": "LESS", "mod_revision": str(since_revision + 1)})
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        txn = {"compare": compare, "success": [{"request_put": put}], "failure": []}
        return await self._call("/kv/txn", txn, lambda r: bool(r.get("succeeded", False)))

    async def delete_if_value(self, key: str, value: str) -> bool:
        txn = {"compare": [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}],
               "success": [{"request_delete_range": {"key": _b64(key)}}], "failure": []}
        return await self._call("/kv/txn", txn, lambda r: bool(r.get("succeeded", False)))

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.session.close()
