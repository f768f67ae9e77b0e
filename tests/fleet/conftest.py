"""Fixtures for the fleet tests: a real 3-member etcd cluster on loopback (Debian's etcd-server), started
per module with temp data dirs and a bounded start, always torn down; skipped without the binary (failed
under CI=true, where .ci/run installs it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from watchdog.fleet.localcluster import LocalEtcdCluster


def _cluster() -> Iterator[LocalEtcdCluster]:
    if shutil.which("etcd") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but the etcd binary is missing (apt-get install etcd-server)", pytrace=False)
        pytest.skip("no etcd binary (apt-get install etcd-server)")
    c = LocalEtcdCluster(3, start_timeout_s=45.0)
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[LocalEtcdCluster]:
    """A healthy 3-member cluster shared by one test module (tests use distinct groups/keys)."""
    yield from _cluster()


@pytest.fixture
def fresh_etcd_cluster() -> Iterator[LocalEtcdCluster]:
    """A 3-member cluster of its own, for a test that stops members."""
    yield from _cluster()
