"""Fixtures shared by every test folder. Only what more than one folder needs lives here; it must stay
import-light (the GPU checks in tests/gpu run with a minimal set of packages), so docker is imported
inside the fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

HOSTBASE_IMAGE = "hostbase:latest"


def docker_engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_unavailable(reason: str) -> None:
    """Skip with the reason; under CI=true fail instead (CI must run the Docker tests, never skip them)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the Docker tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no usable Docker engine: {reason} (run .ci/docker-up.sh)")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A docker-py client on a reachable engine that has the hostbase image; skips (or fails in CI) otherwise."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover
        docker_unavailable(f"docker SDK not installed ({e})")
        raise
    try:
        client = docker.DockerClient(base_url=docker_engine_url(), version="auto", timeout=60)
        client.ping()
    except Exception as e:
        docker_unavailable(f"engine at {docker_engine_url()} unreachable: {e.__class__.__name__}: {str(e)[:160]}")
        raise
    try:
        client.images.get(HOSTBASE_IMAGE)
    except Exception:
        docker_unavailable(f"image {HOSTBASE_IMAGE} is missing")
    yield client
    client.close()


def _private_dockerd(live_restore: bool) -> Iterator[Any]:
    import shutil

    from private_dockerd import PrivateDockerd

    if shutil.which("dockerd") is None or os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but a private dockerd cannot be started (needs root and dockerd)")
        pytest.skip("a private dockerd needs root and the dockerd binary")
    d = PrivateDockerd(live_restore=live_restore)
    try:
        d.start()
        d.import_base()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def private_dockerd(docker_client: Any) -> Iterator[Any]:
    """A private engine with hostbase imported; skips where dockerd cannot be started here (fails under CI)."""
    yield from _private_dockerd(False)


@pytest.fixture
def live_restore_dockerd(docker_client: Any) -> Iterator[Any]:
    """The same with `--live-restore`: its containers keep running while it is down."""
    yield from _private_dockerd(True)
