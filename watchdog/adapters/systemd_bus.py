"""One systemd unit on D-Bus: its state pushed by `PropertiesChanged` signals instead of polled. Stage:
observe (adapter).

`UnitWatch.connect()` opens the bus (system bus, the session bus for a user unit, or a given address),
asks the manager for the unit's object path (`LoadUnit`), adds a match rule for `PropertiesChanged` on that
path, calls `Subscribe` (systemd emits unit signals only while someone is subscribed) and reads every
property once (`GetAll` on the Unit and Service interfaces). From then on each signal updates the cached
properties and a snapshot is queued (bounded: the oldest snapshot is dropped when nobody reads), so a
consumer sees every transition (active → deactivating → failed → activating …) in order, without a single
subprocess. Snapshots use the keys and value formats of `systemctl show --timestamp=unix`, so one mapping
(`state_from_show`) serves both the pushed and the polled path. This module must never call a method that
changes a unit (start/stop stay with `systemctl`), and never block: every call is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
#: the properties `state_from_show` reads, by interface
WANTED = {
    UNIT_IFACE: ("Id", "LoadState", "ActiveState", "SubState"),
    SERVICE_IFACE: ("Result", "MainPID", "ExecMainPID", "ExecMainCode", "ExecMainStatus", "NRestarts",
                    "ExecMainStartTimestamp", "Restart"),
}
_TIMESTAMPS = {"ExecMainStartTimestamp"}  # µs since the epoch on the bus; `@seconds` in `systemctl show`
QUEUE_MAX = 256


class BusUnavailable(Exception):
    """The bus, the systemd manager on it or the unit cannot be reached."""


def show_value(name: str, value: Any) -> str:
    """A D-Bus property value in `systemctl show --timestamp=unix` form."""
    v = getattr(value, "value", value)  # a Variant
    if name in _TIMESTAMPS:
        return f"@{int(v) / 1e6:.6f}" if v else ""
    return str(v)


class UnitWatch:
    """`await connect()`, then `await next_change(timeout)` for each pushed snapshot; `snapshot()` is current."""

    def __init__(self, unit: str, *, address: str | None = None, user: bool = False, timeout_s: float = 5.0) -> None:
        self.unit = unit
        self.address = address
        self.user = user
        self.timeout_s = timeout_s
        self.path: str | None = None
        self.signals = 0  # PropertiesChanged signals applied (bench/tests)
        self.dropped = 0  # snapshots dropped because nobody read them
        self.waiting = 0  # consumers blocked in next_change() right now
        self.refreshes = 0  # GetAll rounds (one at connect; then only after RESYNC without a signal)
        self._bus: MessageBus | None = None
        self._props: dict[str, str] = {}
        self._queue: deque[dict[str, str]] = deque()
        self._wake = asyncio.Event()
        self._gone: asyncio.Future[Any] | None = None

    @property
    def connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    def snapshot(self) -> dict[str, str]:
        return dict(self._props)

    async def _call(self, msg: Message) -> list[Any]:
        if self._bus is None:
            raise BusUnavailable(f"{msg.member}: the bus connection is closed")
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await self._bus.call(msg)
        except (TimeoutError, OSError, DBusFastError, EOFError) as e:
            raise BusUnavailable(f"{msg.member}: {e.__class__.__name__}: {e}") from None
        if reply is None or reply.message_type == MessageType.ERROR:
            err = (reply.error_name if reply is not None else "no reply") or "error"
            detail = reply.body[0] if reply is not None and reply.body else ""
            raise BusUnavailable(f"{msg.member}: {err} {detail}".strip())
        return list(reply.body)

    async def connect(self) -> None:
        """Open the bus, find the unit, subscribe and read its properties. BusUnavailable on any failure."""
        kind = BusType.SESSION if self.user else BusType.SYSTEM
        try:
            async with asyncio.timeout(self.timeout_s):
                self._bus = await MessageBus(bus_address=self.address, bus_type=kind).connect()
        except (TimeoutError, OSError, ValueError, DBusFastError, EOFError) as e:
            self._bus = None
            raise BusUnavailable(f"cannot connect to the {'session' if self.user else 'system'} bus: "
                                 f"{e.__class__.__name__}: {e}") from None
        try:
            [self.path] = await self._call(Message(destination=SYSTEMD, path=MANAGER_PATH, interface=MANAGER_IFACE,
                                                   member="LoadUnit", signature="s", body=[self.unit]))
            rule = (f"type='signal',sender='{SYSTEMD}',interface='{PROPS_IFACE}',member='PropertiesChanged',"
                    f"path='{self.path}'")
            await self._call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                     interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[rule]))
            self._bus.add_message_handler(self._on_message)
            await self._call(Message(destination=SYSTEMD, path=MANAGER_PATH, interface=MANAGER_IFACE,
                                     member="Subscribe"))
            await self.refresh()
        except BusUnavailable:
            await self.close()
            raise

    async def refresh(self) -> dict[str, str]:
        """Read every wanted property (`GetAll`), e.g. after a signal that only invalidated some."""
        self.refreshes += 1
        for iface, names in WANTED.items():
            [values] = await self._call(Message(destination=SYSTEMD, path=self.path or "/", interface=PROPS_IFACE,
                                                member="GetAll", signature="s", body=[iface]))
            self._props.update({n: show_value(n, values[n]) for n in names if n in values})
        return self.snapshot()

    def _on_message(self, msg: Message) -> None:
        if (msg.message_type != MessageType.SIGNAL or msg.member != "PropertiesChanged" or msg.path != self.path
                or len(msg.body) < 2):
            return
        iface, changed = msg.body[0], msg.body[1]
        names = WANTED.get(iface, ())
        update = {n: show_value(n, changed[n]) for n in names if n in changed}
        if not update:
            return
        self.signals += 1
        self._props.update(update)
        if len(self._queue) >= QUEUE_MAX:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(self.snapshot())
        self._wake.set()

    async def next_change(self, timeout_s: float) -> dict[str, str] | None:
        """The next pushed snapshot, or None after `timeout_s` without one (or when the bus went away)."""
        if not self._queue and self.connected:
            self._wake.clear()  # no await since the queue was seen empty: a signal cannot be missed
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await self._wait()
            finally:
                self.waiting -= 1
        return self._queue.popleft() if self._queue else None

    async def _wait(self) -> None:
        """Until a signal arrives or the bus disconnects. The disconnect waiter is made once per connection
        and never cancelled here: cancelling it would cancel the bus's own disconnect future (it is awaited
        inside), and every later wait would then return at once."""
        assert self._bus is not None
        if self._gone is None:
            self._gone = asyncio.ensure_future(self._bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
            self._gone.add_done_callback(_retrieve)
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, self._gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def close(self) -> None:
        gone, self._gone = self._gone, None
        bus, self._bus = self._bus, None
        if bus is not None:
            with contextlib.suppress(Exception):
                bus.disconnect()  # closes the socket; the bus's own reader ends with it
        if gone is not None and not gone.done():
            gone.cancel()


def _retrieve(f: asyncio.Future[Any]) -> None:
    """A disconnect with an error (or a cancelled waiter) is not an 'exception never retrieved'."""
    if not f.cancelled():
        f.exception()


__all__ = ["WANTED", "BusUnavailable", "UnitWatch", "show_value"]
