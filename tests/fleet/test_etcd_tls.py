"""The etcd adapter over client TLS with client-certificate auth (trustme CA, a real TLS etcd member)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from watchdog.adapters.etcd import EtcdKV
from watchdog.errors import CoordinatorUnavailable
from watchdog.fleet import FleetCoordinator, FleetSettings, SlotGrant
from watchdog.fleet.localcluster import ClientTls, LocalEtcdCluster


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("vllm-watchdog@gpu-a")
    files = {k: tmp_path / f"{k}.pem" for k in ("ca", "server_cert", "server_key", "client_cert", "client_key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server_cert"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


@pytest.fixture
def tls_etcd(tls_files: dict[str, Path]) -> Iterator[LocalEtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.skip("no etcd binary (apt-get install etcd-server)")
    f = tls_files
    c = LocalEtcdCluster(1, start_timeout_s=45.0, tls=ClientTls(f["server_cert"], f["server_key"], f["ca"],
                                                                 f["client_cert"], f["client_key"]))
    c.start()
    try:
        yield c
    finally:
        c.close()


async def test_slot_over_mutual_tls(tls_etcd: LocalEtcdCluster, tls_files: dict[str, Path]) -> None:
    """With the CA and a client cert the coordinator takes and releases a slot over https."""
    f = tls_files
    s = FleetSettings.model_validate({"etcd": {"endpoints": tls_etcd.endpoints, "ca_file": str(f["ca"]),
                                               "cert_file": str(f["client_cert"]), "key_file": str(f["client_key"])},
                                      "group": "tls", "host": "gpu-a"})
    assert s.etcd.endpoints[0].startswith("https://")
    kv = EtcdKV(s.etcd.endpoints, ca_file=str(f["ca"]), cert_file=str(f["client_cert"]),
                key_file=str(f["client_key"]))
    try:
        g = await FleetCoordinator(s, kv).budget.acquire("vllm-0", "restart", 1)
        assert isinstance(g, SlotGrant) and g.coordinated
        await g.release()
    finally:
        await kv.close()


async def test_no_client_cert_is_refused(tls_etcd: LocalEtcdCluster, tls_files: dict[str, Path]) -> None:
    """Without a client certificate etcd refuses the connection: CoordinatorUnavailable, never a grant."""
    kv = EtcdKV(tls_etcd.endpoints, ca_file=str(tls_files["ca"]), timeout_s=1.0)
    try:
        with pytest.raises(CoordinatorUnavailable):
            await kv.get_prefix("/x/")
    finally:
        await kv.close()
