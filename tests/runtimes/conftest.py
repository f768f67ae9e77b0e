"""Fixtures for the runtime tests: a real Docker engine (skip with a reason when absent, FAIL under CI=true),
uniquely named containers running tests/runtimes/ctlapp.py on the host runtime, always removed."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polling
import pytest

HERE = Path(__file__).resolve().parent
PREFIX = "wdrt-"
IMAGE = "hostbase:latest"


def docker_base_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


# the `docker_client` fixture (skip here, fail under CI=true) lives in tests/conftest.py


def host_mounts() -> dict[str, dict[str, str]]:
    """The host's runtime, read-only, so the empty hostbase image can run the host's python."""
    vols = {p: {"bind": p, "mode": "ro"} for p in ("/usr", "/lib", "/lib64", "/bin") if os.path.isdir(p)}
    vols[sys.base_prefix] = {"bind": sys.base_prefix, "mode": "ro"}
    vols[str(HERE)] = {"bind": "/tests", "mode": "ro"}
    return vols


def app_command() -> list[str]:
    return [f"{sys.base_prefix}/bin/python3", "-u", "/tests/ctlapp.py", "/ctl"]


# the bounded poll (tests/polling.py) with this folder's 15 s deadline
until = functools.partial(polling.until, limit_s=15.0)


def write_ctl(ctl: Path, name: str, arg: str) -> None:
    """Atomically drop a command file for ctlapp.py."""
    tmp = ctl / f".{name}.{uuid.uuid4().hex}"
    tmp.write_text(arg)
    os.rename(tmp, ctl / name)


def _remove_all(client: Any, name: str) -> None:
    for c in client.containers.list(all=True, filters={"name": name}):
        if c.name == name or c.name.startswith(f"{name}-wdold-"):
            with contextlib.suppress(Exception):
                c.remove(force=True)


@pytest.fixture
def ctl_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ctl"
    d.mkdir()
    d.chmod(0o777)
    return d


@pytest.fixture
def make_container(docker_client: Any, ctl_dir: Path) -> Iterator[Callable[..., Any]]:
    """Start a uniquely named ctlapp container (`--network host`); every one is force-removed afterwards."""
    names: list[str] = []

    def run(
        *,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        mem_limit: str | None = None,
        restart_policy: dict[str, Any] | None = None,
        extra_volumes: dict[str, dict[str, str]] | None = None,
        name: str | None = None,
        start: bool = True,
    ) -> Any:
        name = name or f"{PREFIX}{uuid.uuid4().hex[:10]}"
        names.append(name)
        vols = {**host_mounts(), str(ctl_dir): {"bind": "/ctl", "mode": "rw"}, **(extra_volumes or {})}
        kw: dict[str, Any] = {
            "name": name,
            "network_mode": "host",
            "volumes": vols,
            "environment": env or {},
            "labels": labels or {},
            "detach": True,
        }
        if mem_limit:
            kw.update(mem_limit=mem_limit, memswap_limit=mem_limit)
        if restart_policy:
            kw["restart_policy"] = restart_policy
        if start:
            return docker_client.containers.run(IMAGE, app_command(), **kw)
        return docker_client.containers.create(IMAGE, app_command(), **kw)

    yield run
    for n in names:
        _remove_all(docker_client, n)
