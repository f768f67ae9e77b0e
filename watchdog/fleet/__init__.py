"""Fleet coordination across GPU hosts on etcd: one disruption budget, one breaker, one view per group.
Stage: fleet (between remediation's decision and its disruptive action).

`FleetCoordinator` (membership + breaker + `DisruptionBudget`) talks to etcd only through the narrow
`FleetKV` contract (`watchdog.adapters.etcd.EtcdKV` for real, `watchdog.fleet.fake.FakeKV` in tests).
This package must never import another stage package (probes, detectors, incidents, remediation,
notify): the composition root wires it in.
"""

from watchdog.fleet.budget import DISRUPTIVE_ACTIONS, Denied, DenyReason, DisruptionBudget, SlotGrant
from watchdog.fleet.coordinator import BREAKER_KIND, COORDINATION_KIND, FleetCoordinator, fleet_target, read_status
from watchdog.fleet.kv import FleetKV, KeyValue, RangeResult
from watchdog.fleet.settings import EtcdSettings, FailureMode, FleetSettings
from watchdog.fleet.view import Holder, OpenIncident

__all__ = [
    "BREAKER_KIND",
    "COORDINATION_KIND",
    "DISRUPTIVE_ACTIONS",
    "Denied",
    "DenyReason",
    "DisruptionBudget",
    "EtcdSettings",
    "FailureMode",
    "FleetCoordinator",
    "FleetKV",
    "FleetSettings",
    "Holder",
    "KeyValue",
    "OpenIncident",
    "RangeResult",
    "SlotGrant",
    "fleet_target",
    "read_status",
]
