"""TLS certificate detector: judges `watchdog.probes.tls` results. Stage: detect.

`cert_expiring` per certificate (P2 under `warn_days`, P1 under `critical_days`, P0 expired) and
`cert_invalid` per (certificate, problem); conditions a probe stops reporting resolve. A result that
carries no information (the probe could not read anything) changes nothing.

This module must never do I/O, act, or notify.
"""

from __future__ import annotations

from watchdog.config.host import TlsSettings
from watchdog.detectors.edgebook import EdgeBook, LabelKey, finite, iso_time
from watchdog.model import Finding, IncidentKind, ProbeResult, Severity

_TLS_PROBLEMS: dict[str, tuple[Severity, str]] = {
    "key_mismatch": (Severity.P1, "Install the private key that belongs to this certificate, or re-issue the "
                                  "pair; vLLM cannot serve TLS with a mismatched cert/key."),
    "hostname_mismatch": (Severity.P1, "Re-issue the certificate with the served name in its subjectAltName "
                                       "(or set tls.server_hostname if the watchdog uses another name)."),
    "not_yet_valid": (Severity.P1, "The certificate's not_before is in the future: check the host clock "
                                   "(NTP) or install a certificate that is valid now."),
    "key_permissions": (Severity.P2, "chmod 600 the private key (owner only) and check who could read it; "
                                     "rotate the key if it may have leaked."),
    "untrusted": (Severity.P2, "The served chain does not verify: install the full chain (leaf + "
                               "intermediates) or point tls.ca_file at the issuing CA."),
}
_TLS_BAD_FILE = (Severity.P3, "Fix or remove the file: it is not a usable PEM/DER certificate or key, so "
                              "its expiry cannot be checked.")


class TlsDetector:
    """Judges `TlsEndpointProbe` / `TlsFilesProbe` results: `cert_expiring` (P2 < warn_days, P1 <
    critical_days, P0 expired) per certificate, `cert_invalid` per (certificate, problem)."""

    name = "tls"

    def __init__(self, settings: TlsSettings | None = None) -> None:
        if settings is None:
            settings = TlsSettings()
        self.settings = settings
        self.book = EdgeBook(self.name)

    def expiry_level(self, days_left: float) -> Severity | None:
        if days_left <= 0:
            return Severity.P0
        if days_left < self.settings.critical_days:
            return Severity.P1
        if days_left < self.settings.warn_days:
            return Severity.P2
        return None

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        v = result.values
        if "certs" not in v or "problems" not in v:
            return []  # the probe could not read anything: no information, nothing changes
        scope = f"{result.probe}@{result.target}"
        out: list[Finding] = []
        seen: set[LabelKey] = set()
        for rec in v["certs"]:
            days = finite(rec.get("days_left"))
            if days is None:
                continue
            ident = str(rec.get("id"))
            labels = {"cert": ident, "scope": scope}
            seen.add(EdgeBook.key(IncidentKind.CERT_EXPIRING, labels))
            lvl = self.expiry_level(days)
            when = "expired" if days <= 0 else f"expires in {days:.1f} days"
            ev = {"days_left": days, "not_after": iso_time(rec.get("not_after")), "subject": rec.get("subject"),
                  "issuer": rec.get("issuer"), "serial": rec.get("serial"), "source": rec.get("source"),
                  "verify_error": rec.get("verify_error")}
            f = self.book.step(
                result.target, IncidentKind.CERT_EXPIRING, labels, lvl, now,
                summary=f"TLS certificate {ident} ({rec.get('subject')}) {when}",
                resolved_summary=f"TLS certificate {ident} is valid for {days:.1f} more days",
                evidence=ev,
                remedy="Renew the certificate and reload the server (vLLM --ssl-certfile/--ssl-keyfile); "
                       "restarting alone does not help. Expired: clients are failing now.",
            )
            if f:
                out.append(f)
        for p in v["problems"]:
            code = str(p.get("problem"))
            ident = str(p.get("id"))
            sev, remedy = _TLS_PROBLEMS.get(code, _TLS_BAD_FILE)
            labels = {"cert": ident, "problem": code, "scope": scope}
            seen.add(EdgeBook.key(IncidentKind.CERT_INVALID, labels))
            f = self.book.step(
                result.target, IncidentKind.CERT_INVALID, labels, sev, now,
                summary=f"TLS {code.replace('_', ' ')}: {p.get('detail')}",
                resolved_summary=f"TLS {code.replace('_', ' ')} on {ident} is fixed",
                evidence={"problem": code, "detail": p.get("detail")}, remedy=remedy,
            )
            if f:
                out.append(f)
        # conditions of this probe that are no longer reported are over
        for kind, labels in self.book.keys():
            if labels.get("scope") != scope or EdgeBook.key(kind, labels) in seen:
                continue
            f = self.book.step(result.target, kind, labels, None, now,
                               summary=f"{kind} {labels.get('cert')}",
                               resolved_summary=f"{kind} on {labels.get('cert')} no longer reported")
            if f:
                out.append(f)
        return out

    def active_findings(self) -> list[Finding]:
        return self.book.active()


__all__ = ["TlsDetector"]
