"""Disruption budget and coordinator logic on the in-memory FakeKV (fast, fake clock)."""

from __future__ import annotations

import asyncio

from watchdog.clock import FakeClock
from watchdog.fleet import (
    BREAKER_KIND,
    COORDINATION_KIND,
    Denied,
    DenyReason,
    EtcdSettings,
    FailureMode,
    FleetCoordinator,
    FleetSettings,
    SlotGrant,
)
from watchdog.fleet.fake import FakeKV
from watchdog.model import Finding, Severity


def settings(host: str, **kw: object) -> FleetSettings:
    base: dict[str, object] = {"etcd": EtcdSettings(endpoints=["http://127.0.0.1:2379"]), "group": "g",
                               "host": host, "lease_ttl_s": 6}
    base.update(kw)
    return FleetSettings.model_validate(base)


def coord(kv: FakeKV, host: str, found: list[Finding] | None = None, **kw: object) -> FleetCoordinator:
    return FleetCoordinator(settings(host, **kw), kv, clock=kv.clock,
                            on_finding=(found.append if found is not None else None))


async def test_second_acquirer_is_denied_with_holder() -> None:
    """With max_disrupted 1 the second host is denied FLEET_BUDGET and told who holds the slot."""
    kv = FakeKV(FakeClock())
    a, b = coord(kv, "a"), coord(kv, "b")
    g = await a.budget.acquire("vllm-0", "restart", 7)
    assert isinstance(g, SlotGrant) and g.slot == 0
    d = await b.budget.acquire("vllm-0", "restart", 9)
    assert isinstance(d, Denied) and d.reason == DenyReason.FLEET_BUDGET
    assert [(h.host, h.target, h.action, h.incident_id) for h in d.holders] == [("a", "vllm-0", "restart", 7)]
    assert "a/vllm-0 (restart incident 7)" in str(d)
    await g.release()
    assert isinstance(await b.budget.acquire("vllm-0", "restart", 9), SlotGrant)


async def test_percentage_slots_follow_group_size() -> None:
    """max_disrupted '25%' of 8 registered targets grants exactly 2 slots."""
    kv = FakeKV(FakeClock())
    cs = [coord(kv, f"h{i}", max_disrupted="25%") for i in range(8)]
    for c in cs:
        c.report("vllm", healthy=True, status="ok")
        await c.beat()
    outs = [await c.budget.acquire("vllm", "restart", None) for c in cs]
    assert sum(isinstance(o, SlotGrant) for o in outs) == 2
    assert {o.reason for o in outs if isinstance(o, Denied)} == {DenyReason.FLEET_BUDGET}


async def test_dead_holder_slot_expires_with_lease() -> None:
    """A holder that stops keeping its lease alive loses the slot after the TTL; the next host proceeds."""
    clock = FakeClock()
    kv = FakeKV(clock)
    a, b = coord(kv, "a"), coord(kv, "b")
    g = await a.budget.acquire("t", "restart", 1)
    assert isinstance(g, SlotGrant)
    assert g._task is not None
    g._task.cancel()  # the holder "dies": nobody refreshes its lease
    assert isinstance(await b.budget.acquire("t", "restart", 2), Denied)
    clock.advance(6.1)
    assert isinstance(await b.budget.acquire("t", "restart", 2), SlotGrant)


async def test_unreachable_fail_closed_denies_and_pages_p1() -> None:
    """Without quorum, fail_closed denies with FLEET_UNREACHABLE and opens one P1 coordination finding."""
    kv = FakeKV(FakeClock())
    found: list[Finding] = []
    c = coord(kv, "a", found, mode="fail_closed")
    kv.unavailable = True
    d1 = await c.budget.acquire("t", "restart", 1)
    d2 = await c.budget.acquire("t", "restart", 1)
    assert isinstance(d1, Denied) and d1.reason == DenyReason.FLEET_UNREACHABLE and isinstance(d2, Denied)
    assert [(f.kind, f.severity, f.active) for f in found] == [(COORDINATION_KIND, Severity.P1, True)]
    kv.unavailable = False
    assert isinstance(await c.budget.acquire("t", "restart", 1), SlotGrant)
    assert [(f.kind, f.active) for f in found] == [(COORDINATION_KIND, True), (COORDINATION_KIND, False)]


async def test_unreachable_fail_open_grants_uncoordinated() -> None:
    """Without quorum, fail_open returns an uncoordinated grant and the P1 finding says so."""
    kv = FakeKV(FakeClock())
    found: list[Finding] = []
    c = coord(kv, "a", found, mode="fail_open")
    kv.unavailable = True
    g = await c.budget.acquire("t", "restart", 1)
    assert isinstance(g, SlotGrant) and g.coordinated is False and g.slot is None
    await g.release()
    assert len(found) == 1 and "fail_open" in found[0].summary


def test_default_mode_depends_on_last_seen_group_size() -> None:
    """Without an explicit mode: fail_open only for a group last seen with one target, else fail_closed."""
    s = settings("a")
    assert s.effective_mode(0) == FailureMode.FAIL_CLOSED
    assert s.effective_mode(1) == FailureMode.FAIL_OPEN
    assert s.effective_mode(3) == FailureMode.FAIL_CLOSED


async def test_breaker_pages_once_across_hosts_and_closes() -> None:
    """Above breaker_percent every host is denied FLEET_BREAKER_OPEN, one host pages P0; below it closes."""
    kv = FakeKV(FakeClock())
    found: list[Finding] = []
    cs = [coord(kv, f"h{i}", found, breaker_percent=50) for i in range(4)]
    for c in cs:
        c.report("vllm", healthy=True, status="ok")
        await c.beat()
    for c in cs[:2]:
        c.report("vllm", healthy=False, status="fail")  # 2 of 4 = 50%: not above
        await c.beat()
    assert isinstance(await cs[0].budget.acquire("vllm", "restart", 1), SlotGrant)
    cs[2].report("vllm", healthy=False, status="fail")  # 3 of 4 = 75%
    for c in cs:
        await c.beat()
    outs = [await c.budget.acquire("vllm", "restart", 2) for c in cs[1:]]
    assert all(isinstance(o, Denied) and o.reason == DenyReason.FLEET_BREAKER_OPEN for o in outs)
    opened = [f for f in found if f.kind == BREAKER_KIND and f.active]
    assert len(opened) == 1 and opened[0].severity == Severity.P0
    assert len({f.fingerprint for f in found if f.kind == BREAKER_KIND}) == 1
    cs[2].report("vllm", healthy=True, status="ok")
    cs[1].report("vllm", healthy=True, status="ok")
    for c in cs:
        await c.beat()
    assert [f.active for f in found if f.kind == BREAKER_KIND] == [True, False]
    assert isinstance(await cs[3].budget.acquire("vllm", "restart", 3), Denied)  # slot still held by h0
    assert kv.data.get(cs[0].keys.breaker) is None


async def test_report_does_not_await_and_heartbeat_writes_changes() -> None:
    """report() is synchronous; the started heartbeat publishes it, and close() removes the host."""
    kv = FakeKV()
    c = coord(kv, "a")
    c.report("vllm-0", healthy=True, status="ok", summary="ready")
    await c.start()
    for _ in range(100):
        st = await c.fleet_status()
        if st["hosts"]:
            break
        await asyncio.sleep(0.01)
    assert st["hosts"] == [{"host": "a", "targets": [
        {"host": "a", "target": "vllm-0", "healthy": True, "status": "ok", "summary": "ready", "incidents": [],
         "updated_at": st["hosts"][0]["targets"][0]["updated_at"]}]}]
    await c.close()
    assert (await c.fleet_status())["hosts"] == []


async def test_breaker_needs_min_targets() -> None:
    """A lone failing target (1 of 1) does not trip the breaker below breaker_min_targets."""
    kv = FakeKV(FakeClock())
    found: list[Finding] = []
    c = coord(kv, "a", found, breaker_min_targets=2)
    c.report("vllm", healthy=False, status="fail")
    await c.beat()
    assert isinstance(await c.budget.acquire("vllm", "restart", 1), SlotGrant)
    assert found == []


async def test_dead_host_vanishes_from_the_group_after_ttl() -> None:
    """A host that stops its heartbeat without leaving disappears from fleet status once its lease expires."""
    clock = FakeClock()
    kv = FakeKV(clock)
    dead, alive = coord(kv, "dead"), coord(kv, "alive")
    for c in (dead, alive):
        c.report("vllm", healthy=True, status="ok")
        await c.beat()
    assert [h["host"] for h in (await alive.fleet_status())["hosts"]] == ["alive", "dead"]
    clock.advance(4)
    await alive.beat()  # only "alive" keeps its lease
    clock.advance(4)
    await alive.beat()
    assert [h["host"] for h in (await alive.fleet_status())["hosts"]] == ["alive"]
    assert alive.last_group_size == 1
