"""The narrow key-value contract the fleet coordinator needs from etcd. Stage: fleet (contract).

Every operation is linearizable (served through the raft quorum): a member in a minority partition
cannot answer, so it raises `watchdog.errors.CoordinatorUnavailable` instead of serving a stale view.
The real implementation is `watchdog.adapters.etcd.EtcdKV`; `watchdog.fleet.fake.FakeKV` is the
in-memory fake; `tests/fleet/test_kv_contract.py` runs the same tests against both. The value types
(`KeyValue`, `RangeResult`) live with the adapter, so the adapter layer never imports this stage
package. This module must never do I/O.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from watchdog.adapters.etcd import KeyValue, RangeResult

__all__ = ["FleetKV", "KeyValue", "RangeResult"]


@runtime_checkable
class FleetKV(Protocol):
    """Linearizable etcd operations, each bounded by a timeout and run off the event loop.

    Every method raises `CoordinatorUnavailable` when no quorum answers in time. A write that timed out
    may still have been applied: callers bind what they write to a lease, so it expires with the lease.
    """

    async def grant(self, ttl_s: int) -> int:
        """A new lease with this TTL; returns its id."""
        ...

    async def keepalive(self, lease: int) -> int:
        """Refresh the lease; returns the remaining TTL in seconds, or <= 0 if the lease has expired."""
        ...

    async def revoke(self, lease: int) -> None:
        """Revoke the lease: every key bound to it is deleted at once. Unknown leases are ignored."""
        ...

    async def get_prefix(self, prefix: str) -> RangeResult:
        """Every key under `prefix`, sorted by key (a linearizable read)."""
        ...

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        """Write the key (bound to `lease` when non-zero); returns the new store revision."""
        ...

    async def create(self, key: str, value: str, lease: int = 0, *, unchanged_prefix: str | None = None,
                     since_revision: int = 0) -> bool:
        """Create the key only if it does not exist, in one transaction. With `unchanged_prefix`, also only
        if no key under that prefix was created or modified after `since_revision`. True if written."""
        ...

    async def delete_if_value(self, key: str, value: str) -> bool:
        """Delete the key only if it still holds `value` (one transaction). True if deleted."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
