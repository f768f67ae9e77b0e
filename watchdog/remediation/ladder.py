"""Where an incident is on its policy's ladder, and which rule put it there. Stage: remediate (decide).

Rule (policies/README.md, "The ladder"): a new incident starts at step 1, unless an incident of the same
kind on the same target resolved at most the policy's ladder window before this one opened — then it
continues that one's ladder. Within one incident each step taken (succeeded, failed, escalated, error, or
still running) moves to the next. Pure reads of the durable ledger: this module never acts or writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchdog.model import Incident
from watchdog.remediation import policy as P
from watchdog.store import Attempt, Store

COUNTED = ("succeeded", "failed", "escalated", "error")  # attempts that take a ladder step


@dataclass(frozen=True)
class Position:
    """The next step index, the rule that applied (recorded in every verdict), the incidents whose attempts
    form this ladder (the back-off streak), and the incident's last step taken (None before the first)."""

    index: int
    rule: str
    chain: frozenset[int]
    last: Attempt | None = None


def taken(store: Store, incident_id: int, policy: P.Policy) -> list[Attempt]:
    """The steps this incident took on `policy`'s ladder, oldest first."""
    return [a for a in store.attempts(incident_id=incident_id)
            if a.policy == policy.name and (a.outcome in COUNTED or a.phase != "done")]


def position(store: Store, policies: P.PolicySet, policy: P.Policy, inc: Incident) -> Position:
    own = taken(store, inc.id, policy)
    if own:
        return Position(max(a.step for a in own) + 1, "continues this incident's ladder", frozenset({inc.id}),
                        own[-1])
    window = policies.ladder_window_s(policy)
    for a in reversed(store.attempts(target=inc.target, policy=policy.name,
                                     since=inc.opened_at - window - policy.verify.timeout_s)):
        if a.incident_id is None or a.incident_id == inc.id or a.outcome not in COUNTED:
            continue
        prev = store.incident(a.incident_id)
        if prev is None or prev.kind != inc.kind or prev.id > inc.id:
            continue
        gap = max(0.0, inc.opened_at - (prev.resolved_at if prev.resolved_at is not None else inc.opened_at))
        if gap > window:
            break
        pos = max(x.step for x in taken(store, prev.id, policy)) + 1
        return Position(pos, f"{inc.kind} recurred {gap:.0f} s after incident #{prev.id} resolved (ladder window "
                        f"{window:g} s): continues its ladder", frozenset({inc.id, prev.id}))
    return Position(0, f"new incident: the ladder starts at step 1 (no {inc.kind} on this target within the "
                    f"ladder window of {window:g} s)", frozenset({inc.id}))
