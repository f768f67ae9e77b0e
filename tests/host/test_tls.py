"""Tests of the TLS probes and detector: certificates minted with chosen dates (trustme), served by a
real TLS server on 127.0.0.1, read with the wall clock injected so expiry math is exact."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from watchdog.clock import FakeClock
from watchdog.detectors.host import TlsDetector
from watchdog.model import IncidentKind, Severity, Status
from watchdog.probes.tls import (
    CertKeyPair,
    TlsEndpointProbe,
    TlsFilesProbe,
    TlsSettings,
    hostname_matches,
)

DAY = 86400


class TlsServer:
    """A real TLS server on 127.0.0.1 (one thread); `ctx` can be swapped to serve another certificate."""

    def __init__(self, leaf: trustme.LeafCert) -> None:
        self.ctx = self.context(leaf)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def context(leaf: trustme.LeafCert) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)
        return ctx

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(2.0)
            try:
                with self.ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the verifying client aborts on a bad certificate: expected
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def clock() -> FakeClock:
    """Starts at the real (whole-second) time so that OpenSSL's own verification agrees with it."""
    return FakeClock(start_wall=float(int(time.time())))


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def at(clock: FakeClock, days: float) -> datetime:
    return datetime.fromtimestamp(clock.time() + days * DAY, UTC)


@pytest.fixture
def serve() -> Iterator[list[TlsServer]]:
    servers: list[TlsServer] = []
    yield servers
    for s in servers:
        s.close()


def start(serve: list[TlsServer], leaf: trustme.LeafCert) -> TlsServer:
    s = TlsServer(leaf)
    serve.append(s)
    return s


async def test_served_cert_expiry_edges_p2_p1_p0_and_resolve(clock: FakeClock, ca: trustme.CA, tmp_path: Path,
                                                            serve: list[TlsServer]) -> None:
    """10 days left → P2; 2 days → P1; past not_after → P0; a renewed certificate resolves it."""
    leaf = ca.issue_cert("localhost", "127.0.0.1", not_before=at(clock, -30), not_after=at(clock, 10))
    srv = start(serve, leaf)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    s = TlsSettings(ca_file=tmp_path / "ca.pem")
    probe = TlsEndpointProbe.from_url(f"https://localhost:{srv.port}", s, target="vllm", clock=clock)
    assert probe is not None
    det = TlsDetector(s)
    r = await probe.check()
    rec = r.values["certs"][0]
    assert rec["days_left"] == 10.0 and rec["hostname_ok"] and rec["verify_error"] is None
    out = det.observe(r, clock.monotonic())
    assert [(f.kind, f.severity, f.active) for f in out] == [(IncidentKind.CERT_EXPIRING, Severity.P2, True)]
    assert out[0].evidence["days_left"] == 10.0 and out[0].target == "vllm" and out[0].remedy
    clock.advance(8 * DAY)
    out = det.observe(await probe.check(), clock.monotonic())
    assert [(f.severity, f.active) for f in out] == [(Severity.P1, True)]
    assert out[0].evidence["days_left"] == 2.0
    clock.advance(2 * DAY + 1)
    r = await probe.check()
    out = det.observe(r, clock.monotonic())
    assert [(f.severity, f.active) for f in out] == [(Severity.P0, True)]
    assert "expired" in out[0].summary
    clock.advance(60)
    assert det.observe(await probe.check(), clock.monotonic()) == []  # edges only
    srv.ctx = TlsServer.context(ca.issue_cert("localhost", "127.0.0.1", not_before=at(clock, -1),
                                              not_after=at(clock, 90)))
    out = det.observe(await probe.check(), clock.monotonic())
    assert [(f.kind, f.active, f.severity) for f in out] == [(IncidentKind.CERT_EXPIRING, False, Severity.P0)]


async def test_already_expired_cert_is_still_read_and_verification_reason_reported(
        clock: FakeClock, ca: trustme.CA, tmp_path: Path, serve: list[TlsServer]) -> None:
    """A certificate that expired in 2020 is fetched anyway; the verify error says why; P0 opens."""
    leaf = ca.issue_cert("localhost", not_before=datetime(2019, 1, 1, tzinfo=UTC),
                         not_after=datetime(2020, 1, 1, tzinfo=UTC))
    srv = start(serve, leaf)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    probe = TlsEndpointProbe("127.0.0.1", srv.port, TlsSettings(ca_file=tmp_path / "ca.pem"),
                             hostname="localhost", clock=clock)
    r = await probe.check()
    rec = r.values["certs"][0]
    assert rec["days_left"] < -2000
    assert "expired" in rec["verify_error"]
    out = TlsDetector().observe(r, clock.monotonic())
    assert [(f.kind, f.severity) for f in out] == [(IncidentKind.CERT_EXPIRING, Severity.P0)]


async def test_hostname_mismatch_is_p1_cert_invalid(clock: FakeClock, ca: trustme.CA,
                                                    serve: list[TlsServer]) -> None:
    """A valid certificate for another name served on this target is P1 cert_invalid hostname_mismatch."""
    srv = start(serve, ca.issue_cert("other.example", not_before=at(clock, -1), not_after=at(clock, 365)))
    probe = TlsEndpointProbe("127.0.0.1", srv.port, hostname="vllm.internal", clock=clock)
    r = await probe.check()
    assert r.status is Status.WARN
    out = TlsDetector().observe(r, clock.monotonic())
    assert [(f.kind, f.severity, f.labels["problem"]) for f in out] == [
        (IncidentKind.CERT_INVALID, Severity.P1, "hostname_mismatch")]
    assert "other.example" in out[0].summary


async def test_untrusted_chain_reported_only_when_asked(clock: FakeClock, ca: trustme.CA,
                                                        serve: list[TlsServer]) -> None:
    """Without the CA the chain does not verify: evidence always, a P2 finding only with report_untrusted."""
    srv = start(serve, ca.issue_cert("127.0.0.1", not_before=at(clock, -1), not_after=at(clock, 365)))
    r = await TlsEndpointProbe("127.0.0.1", srv.port, clock=clock).check()
    assert r.values["certs"][0]["verify_error"]
    assert r.values["certs"][0]["hostname_ok"]  # IP SAN matches an IP target
    assert TlsDetector().observe(r, clock.monotonic()) == []
    s = TlsSettings(report_untrusted=True)
    r = await TlsEndpointProbe("127.0.0.1", srv.port, s, clock=clock).check()
    out = TlsDetector(s).observe(r, clock.monotonic())
    assert [(f.severity, f.labels["problem"]) for f in out] == [(Severity.P2, "untrusted")]


async def test_unreachable_endpoint_is_fail_without_findings(clock: FakeClock) -> None:
    """Connection refused is a FAIL result and changes nothing in the detector (liveness owns 'down')."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = await TlsEndpointProbe("127.0.0.1", port, TlsSettings(timeout_s=2), clock=clock).check()
    assert r.status is Status.FAIL and "cannot read" in r.summary
    assert TlsDetector().observe(r, clock.monotonic()) == []


def test_from_url_ignores_plain_http() -> None:
    """An http:// target has no certificate to check."""
    assert TlsEndpointProbe.from_url("http://127.0.0.1:8000") is None
    p = TlsEndpointProbe.from_url("https://vllm.example:7654")
    assert p is not None and (p.host, p.port, p.hostname) == ("vllm.example", 7654, "vllm.example")


def test_hostname_matching_rules(ca: trustme.CA) -> None:
    """Wildcards match one leftmost label only; IPs match IP SANs only; no SAN never matches."""
    der = ca.issue_cert("*.example.com", "10.0.0.1").cert_chain_pems[0].bytes()
    cert = x509.load_pem_x509_certificate(der)
    assert hostname_matches(cert, "a.example.com")
    assert hostname_matches(cert, "A.Example.COM.")
    assert not hostname_matches(cert, "a.b.example.com")
    assert not hostname_matches(cert, "example.com")
    assert hostname_matches(cert, "10.0.0.1")
    assert not hostname_matches(cert, "10.0.0.2")


# -- files ----------------------------------------------------------------------------------------


def write_pair(d: Path, stem: str, leaf: trustme.LeafCert, mode: int = 0o600) -> tuple[Path, Path]:
    crt, key = d / f"{stem}.crt", d / f"{stem}.key"
    crt.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    os.chmod(key, mode)
    return crt, key


async def test_cert_dir_healthy_pair_reports_expiry_only(clock: FakeClock, ca: trustme.CA, tmp_path: Path) -> None:
    """A matching cert/key (0600) with 200 days left: one cert record, no problem, no finding."""
    write_pair(tmp_path, "server", ca.issue_cert("vllm", not_before=at(clock, -1), not_after=at(clock, 200)))
    s = TlsSettings(cert_dir=tmp_path)
    r = await TlsFilesProbe(s, clock=clock).check()
    assert r.status is Status.OK
    assert [c["days_left"] for c in r.values["certs"]] == [200.0]
    assert r.values["problems"] == []
    assert TlsDetector(s).observe(r, clock.monotonic()) == []


async def test_cert_dir_key_mismatch_and_permissions(clock: FakeClock, ca: trustme.CA, tmp_path: Path) -> None:
    """A key from another certificate is P1 key_mismatch; a group-readable key is P2 key_permissions."""
    a = ca.issue_cert("vllm", not_before=at(clock, -1), not_after=at(clock, 200))
    b = ca.issue_cert("vllm", not_before=at(clock, -1), not_after=at(clock, 200))
    _crt, key = write_pair(tmp_path, "server", a, mode=0o640)
    key.write_bytes(b.private_key_pem.bytes())
    s = TlsSettings(cert_dir=tmp_path)
    det = TlsDetector(s)
    out = det.observe(await TlsFilesProbe(s, clock=clock).check(), clock.monotonic())
    got = sorted((f.labels["problem"], f.severity) for f in out)
    assert got == [("key_mismatch", Severity.P1), ("key_permissions", Severity.P2)]
    assert "key" in next(f for f in out if f.labels["problem"] == "key_permissions").remedy
    # the fix: the right key, owner-only → both resolve
    key.write_bytes(a.private_key_pem.bytes())
    os.chmod(key, 0o600)
    clock.advance(3600)
    out = det.observe(await TlsFilesProbe(s, clock=clock).check(), clock.monotonic())
    assert sorted((f.labels["problem"], f.active) for f in out) == [("key_mismatch", False),
                                                                      ("key_permissions", False)]


async def test_not_pem_files_give_one_low_finding_each_never_p0(clock: FakeClock, ca: trustme.CA,
                                                                tmp_path: Path) -> None:
    """Garbage, a truncated PEM and an empty PEM-looking file each give one P3 cert_invalid; no crash."""
    (tmp_path / "garbage.crt").write_bytes(os.urandom(300))
    good = ca.issue_cert("x").cert_chain_pems[0].bytes()
    (tmp_path / "truncated.pem").write_bytes(good[: len(good) // 2])
    (tmp_path / "other.pem").write_text("-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n")
    (tmp_path / "README.txt").write_text("not matched by the patterns")
    s = TlsSettings(cert_dir=tmp_path)
    r = await TlsFilesProbe(s, clock=clock).check()
    out = TlsDetector(s).observe(r, clock.monotonic())
    assert sorted((Path(f.labels["cert"]).name, f.severity, f.labels["problem"]) for f in out) == [
        ("garbage.crt", Severity.P3, "not_pem"), ("other.pem", Severity.P3, "not_pem"),
        ("truncated.pem", Severity.P3, "not_pem")]
    assert all(f.kind == IncidentKind.CERT_INVALID for f in out)
    (tmp_path / "garbage.crt").unlink()
    out = TlsDetector(s).observe(await TlsFilesProbe(s, clock=clock).check(), clock.monotonic())
    assert len(out) == 2


async def test_der_certificate_and_bundles(clock: FakeClock, ca: trustme.CA, tmp_path: Path) -> None:
    """A DER certificate is read; a bundle is judged by its first certificate unless check_chain_certs."""
    leaf = ca.issue_cert("x", not_before=at(clock, -1), not_after=at(clock, 5))
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp_path / "leaf.der").write_bytes(cert.public_bytes(Encoding.DER))
    (tmp_path / "chain.pem").write_bytes(leaf.cert_chain_pems[0].bytes() + ca.cert_pem.bytes())
    r = await TlsFilesProbe(TlsSettings(cert_dir=tmp_path), clock=clock).check()
    assert sorted(c["days_left"] for c in r.values["certs"]) == [5.0, 5.0]
    r = await TlsFilesProbe(TlsSettings(cert_dir=tmp_path, check_chain_certs=True), clock=clock).check()
    assert len(r.values["certs"]) == 3
    out = TlsDetector().observe(r, clock.monotonic())
    assert sorted(f.severity for f in out) == [Severity.P2, Severity.P2]  # the CA itself is valid for years


async def test_explicit_pairs_missing_files_and_encrypted_keys(clock: FakeClock, ca: trustme.CA,
                                                               tmp_path: Path) -> None:
    """A missing cert_dir or cert file is one P3 finding; an encrypted key is not claimed as mismatched."""
    from cryptography.hazmat.primitives import serialization

    leaf = ca.issue_cert("vllm", not_before=at(clock, -1), not_after=at(clock, 200))
    crt, key = write_pair(tmp_path, "vllm", leaf)
    k = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"pw")))
    os.chmod(enc, 0o600)
    other = ca.issue_cert("vllm")
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(other.private_key_pem.bytes())
    os.chmod(wrong, 0o600)
    s = TlsSettings(cert_dir=tmp_path / "nope", cert_files=[
        CertKeyPair(cert=crt, key=key), CertKeyPair(cert=crt, key=enc), CertKeyPair(cert=crt, key=wrong),
        CertKeyPair(cert=tmp_path / "missing.crt")])
    r = await TlsFilesProbe(s, clock=clock).check()
    out = TlsDetector(s).observe(r, clock.monotonic())
    got = sorted((f.labels["problem"], f.severity) for f in out)
    assert got == [("key_mismatch", Severity.P1), ("missing", Severity.P3), ("missing", Severity.P3)]
    assert all("pw" not in str(f.evidence) and "PRIVATE" not in str(f.evidence) for f in out)
