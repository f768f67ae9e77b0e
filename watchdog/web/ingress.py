"""Alertmanager webhook (payload version 4) → Findings. Stage: operator edge (input translation).

Each alert names its target by a label (`target`, then `instance` by default; an `instance` may also be
the host:port of a target's base_url), its kind by `alertname` (through a configurable map; otherwise
the alertname in snake_case) and its severity by the `severity` label. A firing alert is an active
Finding, a resolved one clears it; the alert's fingerprint narrows the incident's fingerprint, so the
same alert posted twice is the same incident. The whole payload is checked before anything is applied:
one bad alert refuses all of them. This module never applies a Finding itself and never trusts a label
for anything but a lookup.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from watchdog.config.models import AlertmanagerIngress
from watchdog.model import Finding, Severity

MAX_ALERTS = 1000
MAX_TEXT = 1000  # characters kept from a label or annotation value
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")


class IngressError(ValueError):
    """The payload is refused; the message says which alert and why (safe to return to the caller)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def snake(name: str) -> str:
    """`VllmEngineDead` → `vllm_engine_dead`; `KV-Cache Full` → `kv_cache_full`."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def _cap(v: Any) -> str:
    s = str(v)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"… [{len(s) - MAX_TEXT} characters cut]"


def _str_map(v: Any, where: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise IngressError(400, f"{where}: must be an object of strings")
    return v


def resolve_target(labels: Mapping[str, str], cfg: AlertmanagerIngress, targets: Mapping[str, str]) -> str | None:
    """The target an alert names: a label whose value is a target name, or an `instance` equal to the
    host:port of a target's base_url."""
    netlocs = {urlsplit(url).netloc: name for name, url in targets.items()}
    for label in cfg.target_labels:
        value = labels.get(label)
        if value is None:
            continue
        if value in targets:
            return value
        if value in netlocs:
            return netlocs[value]
    return None


def parse_payload(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise IngressError(400, "body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise IngressError(400, "body must be a JSON object (Alertmanager webhook payload)")
    if str(doc.get("version")) != "4":
        raise IngressError(422, f"payload version {str(doc.get('version'))[:16]!r} is not supported (need '4')")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise IngressError(400, "alerts: must be a list")
    if len(alerts) > MAX_ALERTS:
        raise IngressError(413, f"{len(alerts)} alerts in one payload (at most {MAX_ALERTS})")
    return doc


def to_finding(i: int, alert: Any, cfg: AlertmanagerIngress, targets: Mapping[str, str]) -> Finding:
    """One alert → one Finding; IngressError (naming `alerts[i]`) when it cannot be mapped."""
    where = f"alerts[{i}]"
    if not isinstance(alert, dict):
        raise IngressError(400, f"{where}: must be an object")
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        raise IngressError(400, f"{where}.status: must be 'firing' or 'resolved'")
    labels = _str_map(alert.get("labels"), f"{where}.labels")
    annotations = _str_map(alert.get("annotations"), f"{where}.annotations")
    alertname = labels.get("alertname", "")
    if not alertname:
        raise IngressError(422, f"{where}.labels.alertname: missing")
    target = resolve_target(labels, cfg, targets)
    if target is None:
        tried = ", ".join(f"{k}={_cap(labels[k])[:80]!r}" for k in cfg.target_labels if k in labels) or "none"
        raise IngressError(422, f"{where}: no known target in labels {cfg.target_labels} (got {tried}; "
                                f"targets: {', '.join(sorted(targets))})")
    kind = cfg.kinds.get(alertname) or snake(alertname)
    if not _KIND.fullmatch(kind):
        raise IngressError(422, f"{where}: alertname {alertname[:80]!r} gives no usable kind (map it in "
                                "http.alertmanager.kinds)")
    sev = Severity(cfg.severities.get(labels.get("severity", "").lower(), cfg.default_severity))
    fp = alert.get("fingerprint")
    if not isinstance(fp, str) or not fp:
        fp = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    summary = annotations.get("summary") or annotations.get("description") or f"Alertmanager: {alertname}"
    evidence = {"alertname": alertname, "labels": {k: _cap(v) for k, v in labels.items()},
                "annotations": {k: _cap(v) for k, v in annotations.items()},
                "starts_at": _cap(alert.get("startsAt", "")), "generator_url": _cap(alert.get("generatorURL", ""))}
    return Finding(target=target, kind=kind, severity=sev, summary=_cap(summary), active=status == "firing",
                   labels={"alertmanager": _cap(fp)[:64]}, evidence=evidence, source="alertmanager",
                   remedy=_cap(annotations.get("runbook_url", "")))


def findings_from(raw: bytes, cfg: AlertmanagerIngress, targets: Mapping[str, str]) -> list[Finding]:
    """Every alert of a webhook payload as Findings; raises IngressError (nothing mapped) on any bad one."""
    doc = parse_payload(raw)
    return [to_finding(i, a, cfg, targets) for i, a in enumerate(doc["alerts"])]
