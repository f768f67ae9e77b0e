"""Incident lifecycle on the durable store: open, update, escalate, resolve, history, restart safety."""

from __future__ import annotations

from pathlib import Path

from watchdog.incidents import IncidentManager
from watchdog.model import EventKind, Finding, Severity, fingerprint
from watchdog.store import Store


def f(kind: str = "service_down", sev: Severity = Severity.P1, active: bool = True, **labels: str) -> Finding:
    return Finding(target="vllm", kind=kind, severity=sev, summary=f"{kind} seen", active=active, labels=labels)


def test_fingerprint_is_stable_and_label_sensitive() -> None:
    """The fingerprint is a sha256 of sorted labels: stable across runs, different for other labels."""
    assert fingerprint("t", "k", {"a": "1", "b": "2"}) == fingerprint("t", "k", {"b": "2", "a": "1"})
    assert fingerprint("t", "k", {"a": "1"}) != fingerprint("t", "k", {"a": "2"})
    assert len(fingerprint("t", "k")) == 24


def test_open_update_escalate_resolve(tmp_path: Path) -> None:
    """One edge per change: opened once, updates are silent, a worse severity escalates, clear resolves."""
    m = IncidentManager(Store(tmp_path / "s.db"))
    e1 = m.apply(f(), 10.0)
    assert [e.event for e in e1] == [EventKind.OPENED]
    assert m.apply(f(), 11.0) == []
    e3 = m.apply(f(sev=Severity.P0), 12.0)
    assert [e.event for e in e3] == [EventKind.ESCALATED]
    assert e3[0].incident.severity == Severity.P0 and e3[0].incident.occurrences == 3
    e4 = m.apply(f(active=False), 13.0)
    assert [e.event for e in e4] == [EventKind.RESOLVED]
    assert e4[0].incident.resolved_at == 13.0
    assert m.apply(f(active=False), 14.0) == []
    hist = [ev["event"] for ev in m.store.events(e1[0].incident.id)]
    assert hist == ["opened", "escalated", "resolved"]


def test_reopen_after_resolve_is_a_new_incident(tmp_path: Path) -> None:
    """The same condition after a resolve opens a new incident with a new id and keeps the old one."""
    m = IncidentManager(Store(tmp_path / "s.db"))
    a = m.apply(f(), 1.0)[0].incident
    m.apply(f(active=False), 2.0)
    b = m.apply(f(), 3.0)[0].incident
    assert a.id != b.id and a.fingerprint == b.fingerprint
    assert len(m.store.incidents()) == 2


def test_incidents_survive_a_restart(tmp_path: Path) -> None:
    """A new manager on the same database continues the open incident instead of opening another."""
    m1 = IncidentManager(Store(tmp_path / "s.db"))
    inc = m1.apply(f(), 1.0)[0].incident
    m1.store.close()
    m2 = IncidentManager(Store(tmp_path / "s.db"))
    assert m2.apply(f(), 2.0) == []
    assert m2.store.open_incidents()[0].id == inc.id


def test_resolve_health_only_touches_server_health_kinds(tmp_path: Path) -> None:
    """Verified readiness resolves server-health incidents, not certificate or disk ones."""
    m = IncidentManager(Store(tmp_path / "s.db"))
    m.apply(f("gpu_oom", Severity.P0), 1.0)
    m.apply(f("cert_expiring", Severity.P2), 1.0)
    edges = m.resolve_health("vllm", 5.0, "ready again", opened_before=5.0)
    assert [e.incident.kind for e in edges] == ["gpu_oom"]
    assert [i.kind for i in m.store.open_incidents()] == ["cert_expiring"]


def test_store_uses_wal(tmp_path: Path) -> None:
    """The state database runs in WAL mode."""
    s = Store(tmp_path / "s.db")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_resolve_health_keeps_what_a_probe_still_reports(tmp_path: Path) -> None:
    """Kinds in `keep` (a failing probe holds them) and crash_loop (resolved by its detector) stay open."""
    m = IncidentManager(Store(tmp_path / "s.db"))
    for kind in ("service_down", "engine_hung", "crash_loop"):
        m.apply(f(kind, Severity.P0), 1.0)
    edges = m.resolve_health("vllm", 5.0, "ready again", opened_before=5.0, keep={"engine_hung"})
    assert [e.incident.kind for e in edges] == ["service_down"]
    assert sorted(i.kind for i in m.store.open_incidents()) == ["crash_loop", "engine_hung"]
