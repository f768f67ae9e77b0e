"""The fleet disruption budget: before a disruptive step a watchdog takes a slot in etcd. Stage: fleet.

A slot is a key `<group>/slots/<n>` (n below the slot limit) bound to a fresh etcd lease, created in one
transaction that also requires that no slot key changed since the linearizable read that counted the
holders — so the number of held slots can never exceed `max_disrupted`, whatever the races. The lease
is kept alive while the step and its verification run, and revoked on release; a dead watchdog's slot
expires with its lease. Grants are never cached: each acquire asks the quorum again. This module must
never block the event loop (all etcd calls go through `FleetKV`, bounded and off-loop), never sleep
while holding nothing, and never grant when etcd cannot answer, except in `fail_open` mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import structlog

from watchdog.clock import Clock
from watchdog.errors import CoordinatorUnavailable
from watchdog.fleet.kv import FleetKV
from watchdog.fleet.settings import FailureMode, FleetSettings
from watchdog.fleet.view import GroupView, Holder, Keys, parse_view

log = structlog.get_logger("watchdog.fleet")

# remediation actions that take a replica out of service: they need a slot (notify/escalate never wait)
DISRUPTIVE_ACTIONS = frozenset({"restart", "stop", "recreate", "set_config", "rollback_config"})


class DenyReason(StrEnum):
    """Why a disruptive step may not run now (shows up in the ledger, logs and the CLI)."""

    FLEET_BUDGET = "FLEET_BUDGET"  # max_disrupted slots are held by others: wait and retry
    FLEET_BREAKER_OPEN = "FLEET_BREAKER_OPEN"  # too much of the group is unhealthy: stop acting, a P0 is paged
    FLEET_UNREACHABLE = "FLEET_UNREACHABLE"  # no etcd quorum and mode is fail_closed: wait and retry


@dataclass(frozen=True, slots=True)
class Denied:
    """No slot: the step waits. `holders` says who holds the slots right now."""

    reason: DenyReason
    holders: tuple[Holder, ...] = ()
    detail: str = ""

    def __str__(self) -> str:
        who = ", ".join(str(h) for h in self.holders)
        tail = f"; held by {who}" if who else ""
        return f"{self.reason.value}: {self.detail}{tail}" if self.detail else f"{self.reason.value}{tail}"


class BudgetHooks(Protocol):
    """What the budget tells the coordinator: every fresh view, and every failure to reach etcd."""

    async def seen(self, view: GroupView) -> bool:
        """Record a fresh view; manage the breaker key; return True while the breaker is open."""
        ...

    def unreachable(self, why: str) -> FailureMode:
        """Record lost coordination (the P1 finding) and return the mode in force."""
        ...


@dataclass(eq=False)
class SlotGrant:
    """A held slot. Keep it while the step and its verification run, then `await release()` (or use
    `async with`). `coordinated` is False for a fail_open grant made without etcd. `lost` turns True
    when the lease could not be kept alive (etcd unreachable for a whole TTL, or the lease expired)."""

    target: str
    action: str
    incident_id: int | None
    slot: int | None
    lease: int
    coordinated: bool
    budget: DisruptionBudget = field(repr=False)
    lost: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _released: bool = field(default=False, repr=False)

    async def release(self) -> None:
        """Give the slot back now (revoke its lease). Idempotent; if etcd cannot be reached the slot still
        frees itself when its lease expires (within lease_ttl_s)."""
        if self._released:
            return
        self._released = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.coordinated:
            try:
                await self.budget.kv.revoke(self.lease)
            except CoordinatorUnavailable as e:
                log.warning("fleet slot release failed; it expires with its lease", error=str(e)[:200])

    async def __aenter__(self) -> SlotGrant:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class DisruptionBudget:
    """Takes and gives back disruption slots for one host of one group."""

    def __init__(self, settings: FleetSettings, kv: FleetKV, host: str, clock: Clock, hooks: BudgetHooks) -> None:
        self.settings = settings
        self.kv = kv
        self.host = host
        self.clock = clock
        self.hooks = hooks
        self.keys = Keys(settings.prefix, settings.group)
        self._bg: set[asyncio.Task[None]] = set()

    async def acquire(self, target: str, action: str, incident_id: int | None) -> SlotGrant | Denied:
        """One try: a slot now, or a Denied with the reason and the current holders. Never waits for a
        slot; bounded by the etcd timeouts."""
        try:
            return await self._acquire(target, action, incident_id)
        except CoordinatorUnavailable as e:
            mode = self.hooks.unreachable(str(e))
            if mode == FailureMode.FAIL_OPEN:
                log.warning("fleet unreachable: acting without a slot (fail_open)", target=target, action=action)
                return SlotGrant(target, action, incident_id, None, 0, False, self)
            return Denied(DenyReason.FLEET_UNREACHABLE, (), f"etcd has no quorum for us: {str(e)[:200]}")

    async def acquire_waiting(self, target: str, action: str, incident_id: int | None,
                              timeout_s: float) -> SlotGrant | Denied:
        """Ask again every `retry_s` (with jitter) until a slot is granted or `timeout_s` passes; returns
        the last Denied on timeout. For callers that may wait (never for notify steps)."""
        deadline = self.clock.monotonic() + timeout_s
        while True:
            out = await self.acquire(target, action, incident_id)
            if isinstance(out, SlotGrant) or self.clock.monotonic() >= deadline:
                return out
            pause = self.settings.retry_s * random.uniform(0.5, 1.0)
            await self.clock.sleep(max(0.0, min(pause, deadline - self.clock.monotonic())))

    async def _acquire(self, target: str, action: str, incident_id: int | None) -> SlotGrant | Denied:
        lease = 0
        try:
            for _ in range(4):  # a lost race re-reads; four losses in a row means the slots are contended
                view = parse_view(self.keys, await self.kv.get_prefix(self.keys.root))
                if await self.hooks.seen(view):
                    return await self._deny(lease, DenyReason.FLEET_BREAKER_OPEN, view,
                                            f"{view.unhealthy}/{view.size} targets unhealthy "
                                            f"(breaker at {self.settings.breaker_percent:g}%)")
                mine = [h for h in view.holders if lease and h.lease == lease]
                if mine:  # an earlier create was applied although its answer was lost
                    return self._granted(target, action, incident_id, mine[0].slot, lease)
                limit = self.settings.slots_for(view.size)
                if len(view.holders) >= limit:
                    return await self._deny(lease, DenyReason.FLEET_BUDGET, view,
                                            f"{len(view.holders)}/{limit} slots held")
                if not lease:
                    lease = await self.kv.grant(self.settings.lease_ttl_s)
                used = {h.slot for h in view.holders}
                n = next(i for i in range(limit) if i not in used)
                me = Holder(n, self.host, target, action, incident_id, self.clock.time())
                if await self.kv.create(self.keys.slot(n), me.to_json(), lease, unchanged_prefix=self.keys.slots,
                                        since_revision=view.revision):
                    return self._granted(target, action, incident_id, n, lease)
            return await self._deny(lease, DenyReason.FLEET_BUDGET, view, "slots contended")
        except BaseException:
            if lease:
                self._revoke_later(lease)
            raise

    def _granted(self, target: str, action: str, incident_id: int | None, slot: int, lease: int) -> SlotGrant:
        g = SlotGrant(target, action, incident_id, slot, lease, True, self)
        g._task = asyncio.get_running_loop().create_task(self._keep(g), name=f"fleet-slot:{target}")
        log.info("fleet slot granted", target=target, action=action, slot=slot, incident=incident_id)
        return g

    async def _deny(self, lease: int, reason: DenyReason, view: GroupView, detail: str) -> Denied:
        if lease:
            self._revoke_later(lease)
        return Denied(reason, view.holders, detail)

    def _revoke_later(self, lease: int) -> None:
        async def go() -> None:
            with contextlib.suppress(CoordinatorUnavailable):
                await self.kv.revoke(lease)

        with contextlib.suppress(RuntimeError):
            t = asyncio.get_running_loop().create_task(go())
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)

    async def _keep(self, g: SlotGrant) -> None:
        """Keep the slot's lease alive every TTL/3; mark the grant lost if that fails for a whole TTL."""
        ttl = self.settings.lease_ttl_s
        last_ok = self.clock.monotonic()
        while True:
            await self.clock.sleep(max(0.2, ttl / 3))
            try:
                left = await self.kv.keepalive(g.lease)
            except CoordinatorUnavailable:
                left = None
            if left is not None and left > 0:
                last_ok = self.clock.monotonic()
                continue
            if left is not None or self.clock.monotonic() - last_ok >= ttl:
                g.lost = True
                log.error("fleet slot lost while held", target=g.target, action=g.action, slot=g.slot)
                return
