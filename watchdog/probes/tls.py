"""TLS certificate probes: the certificate a target serves, and certificate/key files on disk.

Stage: probe. `TlsEndpointProbe` fetches the served certificate with an UNVERIFIED handshake (so an
expired or self-signed certificate is still read), then verifies in a second handshake only to report
why verification fails, and checks the hostname against the subjectAltName itself. `TlsFilesProbe`
reads a certificate directory (the runbook's `SSL_CERT_DIR`) and explicit cert/key pairs: expiry,
key/cert mismatch, private-key permissions, files that are not certificates.

Both report plain values: `certs` (one record per certificate: subject, not_after, days_left computed
from the injected wall clock) and `problems` (one record per defect, with a stable `problem` code).
`watchdog.detectors.host.TlsDetector` turns them into findings.

This module must never send application data over the connection, never trust what it fetched, and
never read a private key's content into a value, a log line or an error (only whether it matches).
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from watchdog.clock import Clock, SystemClock
from watchdog.config.host import CertKeyPair, TlsSettings
from watchdog.model import ProbeResult, Status

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class _Key:
    path: str
    public: bytes | None  # SubjectPublicKeyInfo DER; None when encrypted


def cert_record(cert: x509.Certificate, ident: str, source: str, now: float) -> dict[str, Any]:
    """Plain values for one certificate; `days_left` from the wall clock `now` (negative: expired)."""
    not_after = cert.not_valid_after_utc.timestamp()
    not_before = cert.not_valid_before_utc.timestamp()
    return {
        "id": ident,
        "source": source,
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "serial": format(cert.serial_number, "x"),
        "not_before": not_before,
        "not_after": not_after,
        "days_left": round((not_after - now) / DAY, 4),
        "not_yet_valid": not_before > now,
        "sans": _sans(cert),
    }


def _name(n: x509.Name) -> str:
    cn = n.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cn:
        return str(cn[0].value)
    return n.rfc4514_string()[:200]


def _san_ext(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value  # type: ignore[return-value]
    except x509.ExtensionNotFound:
        return None


def _sans(cert: x509.Certificate) -> list[str]:
    ext = _san_ext(cert)
    if ext is None:
        return []
    names = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
    names += [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
    return names[:50]


def hostname_matches(cert: x509.Certificate, hostname: str) -> bool:
    """RFC 6125 check against subjectAltName only (like browsers and Python's ssl): an IP must be an
    IPAddress entry; a DNS name matches exactly or through a `*` that is the whole leftmost label."""
    ext = _san_ext(cert)
    if ext is None:
        return False
    host = hostname.rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return ip in ext.get_values_for_type(x509.IPAddress)
    for pattern in ext.get_values_for_type(x509.DNSName):
        p = pattern.rstrip(".").lower()
        if p == host:
            return True
        if p.startswith("*.") and "*" not in p[2:]:
            head, _, rest = host.partition(".")
            if head and rest == p[2:] and rest.count(".") >= 1:
                return True
    return False


def _public_der(key_or_cert: Any) -> bytes:
    return bytes(
        key_or_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(bc, "ca", False))


def _result(name: str, target: str, clock: Clock, t0: float, status: Status, summary: str,
            values: dict[str, Any]) -> ProbeResult:
    end = clock.monotonic()
    return ProbeResult(name, target, status, summary, values, max(0.0, end - t0), clock.time(), end)


# -- served certificate -------------------------------------------------------------------------


def fetch_peer_certificate(host: str, port: int, sni: str | None, timeout_s: float) -> bytes:
    """Blocking: DER of the certificate the server presents, WITHOUT verifying it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout_s) as sock, ctx.wrap_socket(
        sock, server_hostname=sni
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der


def verify_peer(host: str, port: int, sni: str | None, ca_file: Path | None, timeout_s: float) -> str | None:
    """Blocking: None when the chain verifies (hostname NOT checked here), else why not."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.check_hostname = False
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, ctx.wrap_socket(
            sock, server_hostname=sni
        ):
            return None
    except ssl.SSLCertVerificationError as e:
        return f"{e.verify_message} (code {e.verify_code})"
    except (ssl.SSLError, OSError) as e:
        return f"verification handshake failed: {e}"


class TlsEndpointProbe:
    """`Probe`: the certificate served on `host:port`. Build it with `from_url()` for a target."""

    def __init__(
        self,
        host: str,
        port: int,
        settings: TlsSettings | None = None,
        *,
        hostname: str | None = None,
        target: str = "",
        clock: Clock | None = None,
        name: str = "tls",
    ) -> None:
        self.name = name
        self.target = target or f"{host}:{port}"
        self.host = host
        self.port = port
        self.settings = settings or TlsSettings()
        self.hostname = self.settings.server_hostname or hostname or host
        self.clock: Clock = clock or SystemClock()

    @classmethod
    def from_url(
        cls, base_url: str, settings: TlsSettings | None = None, *, target: str = "", clock: Clock | None = None
    ) -> TlsEndpointProbe | None:
        """The probe for an https:// base_url, or None for http:// (nothing to check)."""
        u = urlsplit(base_url)
        if u.scheme != "https" or not u.hostname:
            return None
        return cls(u.hostname, u.port or 443, settings, hostname=u.hostname, target=target, clock=clock)

    def _sni(self) -> str | None:
        try:
            ipaddress.ip_address(self.hostname.strip("[]"))
        except ValueError:
            return self.hostname
        return None  # no SNI for an IP address

    def _blocking(self) -> tuple[bytes, str | None]:
        der = fetch_peer_certificate(self.host, self.port, self._sni(), self.settings.timeout_s)
        why = verify_peer(self.host, self.port, self._sni(), self.settings.ca_file, self.settings.timeout_s)
        return der, why

    async def check(self) -> ProbeResult:
        t0 = self.clock.monotonic()
        ep = f"{self.host}:{self.port}"
        try:
            der, why = await asyncio.wait_for(
                asyncio.to_thread(self._blocking), timeout=2 * self.settings.timeout_s + 1
            )
        except (OSError, TimeoutError, ssl.SSLError) as e:
            return _result(self.name, self.target, self.clock, t0, Status.FAIL,
                           f"cannot read the certificate served on {ep}: {e}", {"endpoint": ep})
        now = self.clock.time()
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            bad = [{"id": ep, "problem": "not_parsable", "detail": f"served certificate: {e}"}]
            return _result(self.name, self.target, self.clock, t0, Status.WARN,
                           f"{ep}: served certificate cannot be parsed",
                           {"endpoint": ep, "certs": [], "problems": bad})
        rec = cert_record(cert, ep, "endpoint", now)
        rec["hostname"] = self.hostname
        rec["hostname_ok"] = hostname_matches(cert, self.hostname)
        rec["verify_error"] = why
        problems: list[dict[str, Any]] = []
        if not rec["hostname_ok"]:
            problems.append({"id": ep, "problem": "hostname_mismatch",
                             "detail": f"certificate names {rec['sans'] or 'no subjectAltName'}, "
                                       f"not {self.hostname!r}"})
        if rec["not_yet_valid"]:
            problems.append({"id": ep, "problem": "not_yet_valid",
                             "detail": "certificate is not valid yet (not_before in the future)"})
        if why is not None and self.settings.report_untrusted and rec["days_left"] > 0:
            problems.append({"id": ep, "problem": "untrusted", "detail": why})
        status = Status.OK if not problems and rec["days_left"] > self.settings.warn_days else Status.WARN
        summary = f"{ep}: certificate for {rec['subject']} expires in {rec['days_left']:.1f} days"
        return _result(self.name, self.target, self.clock, t0, status, summary,
                       {"endpoint": ep, "certs": [rec], "problems": problems})


# -- files --------------------------------------------------------------------------------------


class TlsFilesProbe:
    """`Probe`: certificate files in `cert_dir` and the explicit `cert_files` pairs."""

    def __init__(
        self,
        settings: TlsSettings,
        *,
        target: str = "host",
        clock: Clock | None = None,
        name: str = "tls_files",
    ) -> None:
        self.name = name
        self.target = target
        self.settings = settings
        self.clock: Clock = clock or SystemClock()

    async def check(self) -> ProbeResult:
        t0 = self.clock.monotonic()
        certs, problems = await asyncio.to_thread(self._scan, self.clock.time())
        n_bad = len(problems)
        if not certs and not problems:
            status, summary = Status.UNKNOWN, "no certificate files found"
        else:
            soonest = min((c["days_left"] for c in certs), default=None)
            status = Status.WARN if problems or (soonest is not None and soonest <= self.settings.warn_days) \
                else Status.OK
            summary = f"{len(certs)} certificate(s)"
            if soonest is not None:
                summary += f", soonest expiry in {soonest:.1f} days"
            if n_bad:
                summary += f", {n_bad} problem(s): " + "; ".join(
                    f"{p['id']}: {p['problem']}" for p in problems[:3]
                )
        return _result(self.name, self.target, self.clock, t0, status, summary,
                       {"certs": certs, "problems": problems})

    # blocking part
    def _scan(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        s = self.settings
        certs: list[dict[str, Any]] = []
        problems: list[dict[str, Any]] = []
        if s.cert_dir is not None:
            self._scan_dir(s.cert_dir, now, certs, problems)
        for pair in s.cert_files:
            self._scan_pair(pair, now, certs, problems)
        return certs, problems

    def _read(self, path: Path, problems: list[dict[str, Any]]) -> bytes | None:
        ident = str(path)
        try:
            size = path.stat().st_size
            if size > self.settings.max_file_bytes:
                problems.append({"id": ident, "problem": "too_large",
                                 "detail": f"{size} bytes > max_file_bytes {self.settings.max_file_bytes}"})
                return None
            return path.read_bytes()
        except FileNotFoundError:
            problems.append({"id": ident, "problem": "missing", "detail": f"{ident} does not exist"})
        except OSError as e:
            problems.append({"id": ident, "problem": "unreadable", "detail": f"{ident}: {e.strerror or e}"})
        return None

    def _parse(
        self, path: Path, data: bytes, problems: list[dict[str, Any]]
    ) -> tuple[list[x509.Certificate], _Key | None]:
        """Certificates and private key in one file. A file that is neither → one `not_pem` problem."""
        ident = str(path)
        if b"-----BEGIN" not in data:
            try:
                return [x509.load_der_x509_certificate(data)], None
            except ValueError:
                problems.append({"id": ident, "problem": "not_pem",
                                 "detail": f"{ident} is neither a PEM file nor a DER certificate"})
                return [], None
        certs: list[x509.Certificate] = []
        key: _Key | None = None
        if b"CERTIFICATE-----" in data:
            try:
                certs = x509.load_pem_x509_certificates(data)
            except ValueError as e:
                problems.append({"id": ident, "problem": "not_pem",
                                 "detail": f"{ident}: malformed PEM certificate ({str(e)[:120]})"})
        if b"PRIVATE KEY-----" in data:
            try:
                k = serialization.load_pem_private_key(data, password=None)
                key = _Key(ident, _public_der(k))
            except TypeError:  # encrypted: cannot be matched without the passphrase (never asked for)
                key = _Key(ident, None)
            except (ValueError, Exception) as e:  # unsupported key types raise UnsupportedAlgorithm
                problems.append({"id": ident, "problem": "not_pem",
                                 "detail": f"{ident}: malformed PEM private key ({type(e).__name__})"})
        if not certs and key is None and not any(p["id"] == ident for p in problems):
            problems.append({"id": ident, "problem": "not_pem",
                             "detail": f"{ident}: PEM file holds no certificate and no private key"})
        return certs, key

    def _records(self, path: Path, certs: list[x509.Certificate], now: float) -> list[dict[str, Any]]:
        chosen = certs if self.settings.check_chain_certs else certs[:1]
        out = []
        for i, c in enumerate(chosen):
            ident = str(path) if i == 0 else f"{path}#{i}"
            out.append(cert_record(c, ident, "file", now))
        return out

    @staticmethod
    def _check_key_mode(path: Path, problems: list[dict[str, Any]]) -> None:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.append({"id": str(path), "problem": "key_permissions",
                             "detail": f"private key mode {stat.S_IMODE(mode):04o} lets group/others read it "
                                       f"(chmod 600 {path})"})

    def _scan_dir(self, d: Path, now: float, certs_out: list[dict[str, Any]],
                  problems: list[dict[str, Any]]) -> None:
        if not d.is_dir():
            problems.append({"id": str(d), "problem": "missing", "detail": f"cert_dir {d} is not a directory"})
            return
        seen: set[str] = set()
        leaves: list[tuple[Path, x509.Certificate]] = []
        keys: list[tuple[Path, _Key]] = []
        try:
            entries = sorted(d.iterdir())
        except OSError as e:
            problems.append({"id": str(d), "problem": "unreadable", "detail": f"{d}: {e.strerror or e}"})
            return
        for p in entries:
            if p.name.startswith(".") or not any(fnmatch.fnmatch(p.name, pat) for pat in self.settings.patterns):
                continue
            try:
                real = str(p.resolve())
            except OSError:
                real = str(p)
            if real in seen or not p.is_file():
                continue
            seen.add(real)
            data = self._read(p, problems)
            if data is None:
                continue
            certs, key = self._parse(p, data, problems)
            certs_out.extend(self._records(p, certs, now))
            if certs:
                leaves.append((p, certs[0]))
            if key is not None:
                keys.append((p, key))
                self._check_key_mode(p, problems)
        # pair keys with certificates of this directory by public key
        leaf_keys = {_public_der(c): p for p, c in leaves}
        has_server_cert = any(not _is_ca(c) for _, c in leaves)
        for p, key in keys:
            if key.public is None or key.public in leaf_keys:
                continue
            same_stem = [lp for lp, _ in leaves if lp.stem == p.stem and lp != p]
            if same_stem or has_server_cert:
                names = ", ".join(str(x) for x in same_stem) or "any certificate in the directory"
                problems.append({"id": str(p), "problem": "key_mismatch",
                                 "detail": f"private key {p} does not match {names} (wrong key, or the "
                                           f"certificate was renewed with a new key)"})

    def _scan_pair(self, pair: CertKeyPair, now: float, certs_out: list[dict[str, Any]],
                   problems: list[dict[str, Any]]) -> None:
        data = self._read(pair.cert, problems)
        if data is None:
            return
        certs, _ = self._parse(pair.cert, data, problems)
        certs_out.extend(self._records(pair.cert, certs, now))
        if pair.key is None or not certs:
            return
        kdata = self._read(pair.key, problems)
        if kdata is None:
            return
        _, key = self._parse(pair.key, kdata, problems)
        if key is None:
            return
        self._check_key_mode(pair.key, problems)
        if key.public is not None and key.public != _public_der(certs[0]):
            problems.append({"id": str(pair.cert), "problem": "key_mismatch",
                             "detail": f"private key {pair.key} does not belong to certificate {pair.cert}"})


__all__ = [
    "CertKeyPair",
    "TlsEndpointProbe",
    "TlsFilesProbe",
    "TlsSettings",
    "cert_record",
    "fetch_peer_certificate",
    "hostname_matches",
    "verify_peer",
]
