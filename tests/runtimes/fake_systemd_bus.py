"""A private `dbus-daemon --session` and a fake `org.freedesktop.systemd1` on it: the Manager methods the
watchdog calls (LoadUnit, Subscribe) and one service unit object whose Unit/Service properties a test
changes, each change emitted as a real `PropertiesChanged` signal (PID 1 is not systemd on these machines)."""

# no `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the live annotations
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

UNIT_PATH = "/org/freedesktop/systemd1/unit/vllm_2eservice"


@contextlib.contextmanager
def private_bus(tmp: Path) -> Iterator[str]:
    """A dbus-daemon of our own (session config, socket in `tmp`); yields its address, always stopped."""
    exe = shutil.which("dbus-daemon")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but dbus-daemon is missing (.ci/run installs the dbus package)", pytrace=False)
        pytest.skip("dbus-daemon is not installed (Debian package dbus)")
    addr = f"unix:path={tmp / 'bus.sock'}"
    proc = subprocess.Popen([exe, "--session", "--nofork", "--nopidfile", f"--address={addr}", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()  # printed once it listens
        assert line.startswith("unix:"), proc.stderr.read().decode() if proc.stderr else line
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Manager(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.subscribed = 0
        self.loaded: list[str] = []

    @method()
    def LoadUnit(self, name: "s") -> "o":  # type: ignore[name-defined]  # noqa: F821
        self.loaded.append(name)
        return UNIT_PATH

    @method()
    def Subscribe(self):  # type: ignore[no-untyped-def]  # no return annotation: an empty D-Bus signature
        self.subscribed += 1


def _props(cls_name: str, iface: str, spec: dict[str, tuple[str, Any]]) -> type[ServiceInterface]:
    """A ServiceInterface class with read-only properties `spec` = {name: (signature, initial)}."""

    def init(self: Any) -> None:
        ServiceInterface.__init__(self, iface)
        self.values = {k: v for k, (_, v) in spec.items()}

    ns: dict[str, Any] = {"__init__": init}
    for name, (sig, _) in spec.items():
        ns[name] = dbus_property(access=PropertyAccess.READ)(_getter(name, sig))
    return type(cls_name, (ServiceInterface,), ns)


def _getter(name: str, sig: str) -> Any:
    def getter(self: Any) -> Any:
        return self.values[name]

    getter.__name__ = name
    getter.__annotations__ = {"return": sig}
    return getter


UnitIface = _props("UnitIface", "org.freedesktop.systemd1.Unit", {
    "Id": ("s", "vllm.service"), "LoadState": ("s", "loaded"), "ActiveState": ("s", "active"),
    "SubState": ("s", "running"),
})
ServiceIface = _props("ServiceIface", "org.freedesktop.systemd1.Service", {
    "Result": ("s", "success"), "MainPID": ("u", 4242), "ExecMainPID": ("u", 4242), "ExecMainCode": ("i", 0),
    "ExecMainStatus": ("i", 0), "NRestarts": ("u", 0), "ExecMainStartTimestamp": ("t", 1764262800000000),
    "Restart": ("s", "on-failure"),
})


class FakeSystemd:
    """`await FakeSystemd.start(address)`; `set("Unit"|"Service", **props)` changes and signals them."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.manager = Manager()
        self.unit = UnitIface()
        self.service = ServiceIface()

    @classmethod
    async def start(cls, address: str) -> "FakeSystemd":
        bus = await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()
        fake = cls(bus)
        bus.export("/org/freedesktop/systemd1", fake.manager)
        bus.export(UNIT_PATH, fake.unit)
        bus.export(UNIT_PATH, fake.service)
        await bus.request_name("org.freedesktop.systemd1")
        return fake

    def set(self, which: str, **props: Any) -> None:
        iface: Any = self.unit if which == "Unit" else self.service
        iface.values.update(props)
        iface.emit_properties_changed(props)

    def stop(self) -> None:
        self.bus.disconnect()
