"""In-memory fake of the fleet key-value contract (`FleetKV`), for unit tests of the coordinator.
Stage: fleet (test support).

Behaves like one etcd cluster: one revision counter, leases that expire on the injected clock
(checked on every operation), conditional creates, and an `unavailable` switch that makes every call
raise `CoordinatorUnavailable` (a lost quorum). Several coordinators may share one `FakeKV`. It must
never sleep, start tasks or touch the network; `tests/fleet/test_kv_contract.py` pins it to the same
behaviour as the real adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watchdog.adapters.etcd import KeyValue, RangeResult
from watchdog.clock import Clock, SystemClock
from watchdog.errors import CoordinatorUnavailable


@dataclass
class _Lease:
    ttl_s: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


class FakeKV:
    """A single-process stand-in for an etcd cluster; satisfies `watchdog.fleet.kv.FleetKV`."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.revision = 1
        self.data: dict[str, KeyValue] = {}
        self.leases: dict[int, _Lease] = {}
        self._next_lease = 0x1000
        self.unavailable = False
        self.calls = 0

    def _enter(self) -> None:
        self.calls += 1
        if self.unavailable:
            raise CoordinatorUnavailable("fake etcd: no quorum")
        now = self.clock.monotonic()
        for lid in [lid for lid, ls in self.leases.items() if ls.expires_at <= now]:
            self._drop_lease(lid)

    def _drop_lease(self, lid: int) -> None:
        ls = self.leases.pop(lid, None)
        if ls is None:
            return
        dropped = [k for k in ls.keys if k in self.data and self.data[k].lease == lid]
        if dropped:
            self.revision += 1
        for k in dropped:
            del self.data[k]

    def _write(self, key: str, value: str, lease: int) -> int:
        if lease and lease not in self.leases:
            raise CoordinatorUnavailable("fake etcd: requested lease not found")
        self.revision += 1
        old = self.data.get(key)
        created = old.create_revision if old is not None else self.revision
        if old is not None and old.lease and old.lease in self.leases:
            self.leases[old.lease].keys.discard(key)
        self.data[key] = KeyValue(key, value, lease, created, self.revision)
        if lease:
            self.leases[lease].keys.add(key)
        return self.revision

    async def grant(self, ttl_s: int) -> int:
        self._enter()
        self._next_lease += 1
        self.leases[self._next_lease] = _Lease(ttl_s, self.clock.monotonic() + ttl_s)
        return self._next_lease

    async def keepalive(self, lease: int) -> int:
        self._enter()
        ls = self.leases.get(lease)
        if ls is None:
            return -1
        ls.expires_at = self.clock.monotonic() + ls.ttl_s
        return ls.ttl_s

    async def revoke(self, lease: int) -> None:
        self._enter()
        self._drop_lease(lease)

    async def get_prefix(self, prefix: str) -> RangeResult:
        self._enter()
        kvs = tuple(self.data[k] for k in sorted(self.data) if k.startswith(prefix))
        return RangeResult(kvs, self.revision)

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        self._enter()
        return self._write(key, value, lease)

    async def create(self, key: str, value: str, lease: int = 0, *, unchanged_prefix: str | None = None,
                     since_revision: int = 0) -> bool:
        self._enter()
        if key in self.data:
            return False
        if unchanged_prefix is not None and any(
            kv.mod_revision > since_revision for k, kv in self.data.items() if k.startswith(unchanged_prefix)
        ):
            return False
        self._write(key, value, lease)
        return True

    async def delete_if_value(self, key: str, value: str) -> bool:
        self._enter()
        kv = self.data.get(key)
        if kv is None or kv.value != value:
            return False
        self.revision += 1
        del self.data[key]
        if kv.lease in self.leases:
            self.leases[kv.lease].keys.discard(key)
        return True

    async def close(self) -> None:
        return None
