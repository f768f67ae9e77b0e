"""The FleetKV contract, run against the in-memory fake and the real etcd adapter alike."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from polling import until

from watchdog.adapters.etcd import EtcdKV
from watchdog.clock import FakeClock
from watchdog.errors import CoordinatorUnavailable
from watchdog.fleet.fake import FakeKV
from watchdog.fleet.kv import FleetKV
from watchdog.fleet.localcluster import LocalEtcdCluster

_n = itertools.count()


@pytest.fixture(params=["fake", "etcd"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[FleetKV]:
    if request.param == "fake":
        yield FakeKV(FakeClock())
        return
    cluster: LocalEtcdCluster = request.getfixturevalue("etcd_cluster")
    real = EtcdKV(cluster.endpoints, timeout_s=2.0)
    try:
        yield real
    finally:
        await real.close()


def _p() -> str:
    return f"/contract/{next(_n)}/"


async def test_satisfies_protocol(kv: FleetKV) -> None:
    """Both implementations satisfy the runtime-checkable FleetKV protocol."""
    assert isinstance(kv, FleetKV)


async def test_create_only_if_absent(kv: FleetKV) -> None:
    """create() writes a missing key once and refuses the second time, leaving the first value."""
    p = _p()
    assert await kv.create(p + "a", "one") is True
    assert await kv.create(p + "a", "two") is False
    r = await kv.get_prefix(p)
    assert [(x.key, x.value) for x in r.kvs] == [(p + "a", "one")]


async def test_create_guarded_by_prefix_revision(kv: FleetKV) -> None:
    """A guarded create fails when any key under the prefix changed after the read revision."""
    p = _p()
    r0 = await kv.get_prefix(p)
    await kv.put(p + "other", "x")
    assert await kv.create(p + "mine", "v", unchanged_prefix=p, since_revision=r0.revision) is False
    r1 = await kv.get_prefix(p)
    assert await kv.create(p + "mine", "v", unchanged_prefix=p, since_revision=r1.revision) is True


async def test_prefix_range_is_sorted_and_bounded(kv: FleetKV) -> None:
    """get_prefix returns only keys under the prefix, sorted by key, with a revision that grows on writes."""
    p = _p()
    await kv.put(p + "b", "2")
    await kv.put(p + "a", "1")
    await kv.put(p[:-1] + "x", "outside")
    r = await kv.get_prefix(p)
    assert [x.key for x in r.kvs] == [p + "a", p + "b"]
    rev = await kv.put(p + "c", "3")
    assert rev > r.revision


async def test_revoke_deletes_bound_keys(kv: FleetKV) -> None:
    """Revoking a lease deletes every key bound to it; keepalive then reports the lease gone."""
    p = _p()
    lease = await kv.grant(10)
    assert await kv.keepalive(lease) > 0
    await kv.put(p + "bound", "x", lease)
    await kv.put(p + "free", "y")
    await kv.revoke(lease)
    assert [x.key for x in (await kv.get_prefix(p)).kvs] == [p + "free"]
    assert await kv.keepalive(lease) <= 0
    await kv.revoke(lease)  # revoking again is harmless


async def test_delete_if_value(kv: FleetKV) -> None:
    """delete_if_value deletes only while the key still holds the expected value."""
    p = _p()
    await kv.put(p + "k", "mine")
    assert await kv.delete_if_value(p + "k", "theirs") is False
    assert await kv.delete_if_value(p + "k", "mine") is True
    assert (await kv.get_prefix(p)).kvs == ()


async def test_lease_expires_without_keepalive(kv: FleetKV) -> None:
    """A lease that is not kept alive expires and takes its keys with it."""
    p = _p()
    lease = await kv.grant(2)
    await kv.put(p + "k", "v", lease)
    lease_kv = (await kv.get_prefix(p)).kvs[0]
    assert lease_kv.lease == lease
    if isinstance(kv, FakeKV):
        assert isinstance(kv.clock, FakeClock)
        kv.clock.advance(2.1)

    async def gone() -> bool:
        return (await kv.get_prefix(p)).kvs == ()

    await until(gone, limit_s=8.0, every=0.2, what="key bound to an expired lease disappears")


async def test_write_with_unknown_lease_is_refused(kv: FleetKV) -> None:
    """Writing with a lease that does not exist raises CoordinatorUnavailable instead of writing unbound."""
    p = _p()
    lease = await kv.grant(5)
    await kv.revoke(lease)
    with pytest.raises(CoordinatorUnavailable):
        await kv.put(p + "k", "v", lease)
    assert (await kv.get_prefix(p)).kvs == ()
