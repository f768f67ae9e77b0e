"""The fleet group as read from etcd: key layout, member/slot records, breaker arithmetic. Stage: fleet.

Pure functions and frozen value types: parse one linearizable range of the group prefix into a
`GroupView`. This module must never do I/O, keep state between reads, or cache a grant.

Key layout under `<prefix>/<group>/`:
- `members/<host>/<target>`: a target's health and open incidents, bound to the host's member lease
- `slots/<n>`: one held disruption slot, bound to the holder's slot lease (n < the slot limit)
- `breaker`: present while the fleet breaker is open; created-if-absent by the one host that pages
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from watchdog.adapters.etcd import KeyValue, RangeResult


@dataclass(frozen=True, slots=True)
class Keys:
    """Where a group's records live in etcd."""

    prefix: str
    group: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.group}/"

    @property
    def members(self) -> str:
        return f"{self.root}members/"

    @property
    def slots(self) -> str:
        return f"{self.root}slots/"

    @property
    def breaker(self) -> str:
        return f"{self.root}breaker"

    def member(self, host: str, target: str) -> str:
        return f"{self.members}{quote(host, safe='')}/{quote(target, safe='')}"

    def slot(self, n: int) -> str:
        return f"{self.slots}{n}"


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An open incident as the fleet sees it (no evidence: the view stays small)."""

    id: int
    kind: str
    severity: str
    summary: str = ""


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """One target on one host, as its watchdog last reported it."""

    host: str
    target: str
    healthy: bool
    status: str
    summary: str = ""
    incidents: tuple[OpenIncident, ...] = ()
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"healthy": self.healthy, "status": self.status, "summary": self.summary[:300],
                           "incidents": [vars_incident(i) for i in self.incidents[:20]],
                           "updated_at": self.updated_at}, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "target": self.target, "healthy": self.healthy, "status": self.status,
                "summary": self.summary, "incidents": [vars_incident(i) for i in self.incidents],
                "updated_at": self.updated_at}


def vars_incident(i: OpenIncident) -> dict[str, Any]:
    return {"id": i.id, "kind": i.kind, "severity": i.severity, "summary": i.summary[:200]}


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a disruption slot, and since when (wall clock)."""

    slot: int
    host: str
    target: str
    action: str
    incident_id: int | None
    since: float
    lease: int = 0

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "target": self.target, "action": self.action,
                           "incident_id": self.incident_id, "since": self.since}, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "host": self.host, "target": self.target, "action": self.action,
                "incident_id": self.incident_id, "since": self.since}

    def __str__(self) -> str:
        inc = f" incident {self.incident_id}" if self.incident_id is not None else ""
        return f"{self.host}/{self.target} ({self.action}{inc})"


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The breaker key's content: which host opened it (and paged), and the counts it saw."""

    host: str
    unhealthy: int
    total: int
    since: float
    raw: str = ""


@dataclass(frozen=True, slots=True)
class GroupView:
    """Everything under the group prefix at one revision."""

    revision: int
    targets: tuple[TargetHealth, ...] = ()
    holders: tuple[Holder, ...] = ()
    breaker: BreakerRecord | None = None
    unreadable: tuple[str, ...] = field(default=())  # keys whose value did not parse (skipped, reported)

    @property
    def size(self) -> int:
        """Number of targets in the group (what a percentage max_disrupted is a share of)."""
        return len(self.targets)

    @property
    def unhealthy(self) -> int:
        return sum(1 for t in self.targets if not t.healthy)

    def breaker_tripped(self, breaker_percent: float, min_targets: int = 1) -> bool:
        """More than `breaker_percent` of the group's targets are unhealthy (100 never trips), in a group
        of at least `min_targets` registered targets."""
        return self.size >= max(1, min_targets) and self.unhealthy * 100 > breaker_percent * self.size

    def hosts(self) -> dict[str, list[TargetHealth]]:
        out: dict[str, list[TargetHealth]] = {}
        for t in self.targets:
            out.setdefault(t.host, []).append(t)
        return out


def parse_view(keys: Keys, r: RangeResult) -> GroupView:
    """Parse one range of `keys.root`. Malformed values are skipped and listed, never fatal."""
    targets: list[TargetHealth] = []
    holders: list[Holder] = []
    breaker: BreakerRecord | None = None
    bad: list[str] = []
    for kv in r.kvs:
        try:
            if kv.key.startswith(keys.members):
                targets.append(_target(keys, kv))
            elif kv.key.startswith(keys.slots):
                holders.append(_holder(keys, kv))
            elif kv.key == keys.breaker:
                d = json.loads(kv.value)
                breaker = BreakerRecord(str(d["host"]), int(d["unhealthy"]), int(d["total"]), float(d["since"]),
                                        kv.value)
        except (ValueError, KeyError, TypeError):
            bad.append(kv.key)
    return GroupView(r.revision, tuple(targets), tuple(sorted(holders, key=lambda h: h.slot)), breaker, tuple(bad))


def _target(keys: Keys, kv: KeyValue) -> TargetHealth:
    host_q, target_q = kv.key[len(keys.members):].split("/", 1)
    d = json.loads(kv.value)
    incs = tuple(OpenIncident(int(i["id"]), str(i["kind"]), str(i["severity"]), str(i.get("summary", "")))
                 for i in d.get("incidents", ()))
    return TargetHealth(unquote(host_q), unquote(target_q), bool(d["healthy"]), str(d["status"]),
                        str(d.get("summary", "")), incs, float(d.get("updated_at", 0.0)))


def _holder(keys: Keys, kv: KeyValue) -> Holder:
    d = json.loads(kv.value)
    inc = d.get("incident_id")
    return Holder(int(kv.key[len(keys.slots):]), str(d["host"]), str(d["target"]), str(d["action"]),
                  None if inc is None else int(inc), float(d["since"]), kv.lease)


def status_dict(group: str, view: GroupView, slot_limit: int, breaker_percent: float) -> dict[str, Any]:
    """The `fleet status --json` document."""
    hosts: Mapping[str, Sequence[TargetHealth]] = view.hosts()
    return {
        "group": group,
        "revision": view.revision,
        "targets": view.size,
        "unhealthy": view.unhealthy,
        "slot_limit": slot_limit,
        "slots": [h.to_dict() for h in view.holders],
        "breaker": None if view.breaker is None else {
            "opened_by": view.breaker.host, "unhealthy": view.breaker.unhealthy, "total": view.breaker.total,
            "since": view.breaker.since},
        "breaker_percent": breaker_percent,
        "hosts": [{"host": h, "targets": [t.to_dict() for t in ts]} for h, ts in sorted(hosts.items())],
        "unreadable_keys": list(view.unreadable),
    }
