"""systemd notify protocol (`sd_notify`) without dependencies. Stage: adapter (the daemon's own liveness).

Tells the service manager that the daemon is ready, reloading, stopping, what it is doing (`STATUS=`)
and that it is still alive (`WATCHDOG=1`). The protocol is one `AF_UNIX`/`SOCK_DGRAM` datagram of
newline-separated `KEY=VALUE` lines sent to `$NOTIFY_SOCKET` (a path, or `@name` for a Linux abstract
socket); systemd guarantees it stable. Sends are non-blocking, encoded as UTF-8, and never raise: a
missing or broken socket returns `False` (systemd recommends ignoring the result).

`WatchdogPinger` sends `WATCHDOG=1` at the ping interval (half of `WatchdogSec=`) only while the
daemon's health function says its own loop is making progress, so that a wedged daemon stops pinging
and systemd restarts it (autoheal #87, Monit #870: a watchdog that hangs is worse than none).

This module must never decide anything about targets, never block the event loop, and never let a
notification failure reach its caller.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from watchdog.clock import Clock

log = structlog.get_logger(__name__)

STATUS_MAX_CHARS = 512
"""`STATUS=` texts longer than this are cut (with an ellipsis): it is a one-line summary for `systemctl`."""


def parse_address(raw: str | None) -> str | None:
    """Return the socket address for `$NOTIFY_SOCKET`, or None when it is unset or unsupported.

    `/path` is a filesystem socket; `@name` is the abstract namespace (the `@` becomes a NUL byte).
    `vsock:` addresses (VMs) are not supported and yield None.
    """
    if not raw:
        return None
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    return None


def _one_line(text: str) -> str:
    flat = " ".join(text.replace("\x00", " ").split())
    if len(flat) > STATUS_MAX_CHARS:
        flat = flat[: STATUS_MAX_CHARS - 1] + "…"
    return flat


def sd_notify(*fields: str, address: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification datagram; True if it was handed to the socket, False otherwise. Never raises.

    `fields` are `KEY=VALUE` strings (a field containing a newline is refused: it would inject another
    assignment). `address` overrides `$NOTIFY_SOCKET` (raw form: `/path` or `@abstract`).
    """
    try:
        env = os.environ if environ is None else environ
        addr = parse_address(address if address is not None else env.get("NOTIFY_SOCKET"))
        if addr is None or not fields:
            return False
        for f in fields:
            if "\n" in f or "=" not in f:
                log.warning("sd_notify.bad_field", field=f[:40])
                return False
        payload = "\n".join(fields).encode("utf-8")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)  # a full receive queue must never stall the daemon's event loop
            s.sendto(payload, addr)
        return True
    except Exception as e:  # the protocol says: ignore failures; we log them
        log.debug("sd_notify.failed", error=type(e).__name__, detail=str(e)[:200])
        return False


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd expects in `MONOTONIC_USEC=` (not the injected clock)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half of `$WATCHDOG_USEC`), or None when systemd wants none.

    Honours `$WATCHDOG_PID`: when it is set and is not this process, the watchdog is meant for another
    process (e.g. a parent shell) and None is returned. Malformed or non-positive values also yield None.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "").strip()
    raw_pid = env.get("WATCHDOG_PID", "").strip()
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
        if raw_pid and int(raw_pid) != (os.getpid() if pid is None else pid):
            return None
    except ValueError:
        log.warning("sd_notify.bad_watchdog_env", watchdog_usec=raw_usec[:32], watchdog_pid=raw_pid[:32])
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / 2


class SdNotifier:
    """The daemon's handle on the service manager. Every method returns whether the datagram was sent.

    `address` is the raw `$NOTIFY_SOCKET` value (`/path` or `@abstract`); by default it is read from the
    environment once, at construction. Without a socket (not under systemd) every call is a cheap no-op
    returning False.
    """

    def __init__(self, address: str | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._raw = address if address is not None else env.get("NOTIFY_SOCKET", "")
        self._addr = parse_address(self._raw)

    @property
    def enabled(self) -> bool:
        """True when a supported notify socket is configured."""
        return self._addr is not None

    def __repr__(self) -> str:
        return f"SdNotifier(address={self._raw!r})"

    def send(self, *fields: str) -> bool:
        """Send raw `KEY=VALUE` fields in one datagram."""
        if self._addr is None:
            return False
        return sd_notify(*fields, address=self._raw)

    def ready(self, status: str | None = None) -> bool:
        """`READY=1`: startup (or a reload) is complete."""
        return self.send("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        """`STATUS=`: a one-line, human-readable summary shown by `systemctl status`."""
        return self.send(*self._status(text))

    def stopping(self, status: str | None = None) -> bool:
        """`STOPPING=1`: a clean shutdown has begun."""
        return self.send("STOPPING=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """`RELOADING=1` with `MONOTONIC_USEC=` (required by `Type=notify-reload`); send `ready()` after."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", *self._status(status))

    def watchdog(self) -> bool:
        """`WATCHDOG=1`: keep-alive. Call only from a proof-of-progress point (see `WatchdogPinger`)."""
        return self.send("WATCHDOG=1")

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)


class ProgressHeartbeat:
    """Proof that the daemon's loop is progressing: the loop calls `beat()`, the pinger asks `fresh()`.

    Meant to be one input of the daemon's health function: the scheduler calls `beat()` after each
    completed probe cycle, and `fresh()` turns False once no beat came for `max_age` seconds (monotonic,
    on the injected clock). Before the first beat the age counts from construction.
    """

    def __init__(self, clock: Clock, max_age: float) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be > 0 seconds")
        self._clock = clock
        self.max_age = max_age
        self._last = clock.monotonic()

    def beat(self) -> None:
        """Record progress now."""
        self._last = self._clock.monotonic()

    def age(self) -> float:
        """Seconds since the last beat (or since construction)."""
        return self._clock.monotonic() - self._last

    def fresh(self) -> bool:
        """True while the last beat is at most `max_age` seconds old."""
        return self.age() <= self.max_age


class WatchdogPinger:
    """Sends `WATCHDOG=1` every `interval` seconds, but only while `is_healthy()` returns True.

    `interval` is the ping period itself, normally `watchdog_interval()` (already half of
    `WatchdogSec=`); None means "read it from the environment", and if systemd asked for no watchdog,
    `run()` returns at once. `is_healthy` is the daemon's own verdict on its loop (scheduler running,
    probes completing, no job stuck past its timeout); if it returns False or raises, the ping is
    withheld, so a wedged daemon is restarted by systemd after `WatchdogSec=`. If the event loop itself
    is blocked, this task cannot run either and no ping leaves: the failure mode is always "no ping".
    """

    def __init__(
        self,
        notifier: SdNotifier,
        is_healthy: Callable[[], bool],
        clock: Clock,
        interval: float | None = None,
    ) -> None:
        if interval is not None and interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self._notifier = notifier
        self._is_healthy = is_healthy
        self._clock = clock
        self.interval = interval if interval is not None else watchdog_interval()
        self.pings_sent = 0
        self.pings_withheld = 0
        self._healthy_last: bool | None = None

    def _healthy(self) -> bool:
        try:
            return bool(self._is_healthy())
        except Exception as e:  # a broken health function means "not healthy"
            log.warning("watchdog_pinger.health_check_raised", error=type(e).__name__, detail=str(e)[:200])
            return False

    def tick(self) -> bool:
        """Evaluate health once and ping if healthy. Returns True if a ping was sent."""
        healthy = self._healthy()
        if healthy != self._healthy_last:
            if healthy:
                log.info("watchdog_pinger.healthy", interval_s=self.interval)
            else:
                log.warning("watchdog_pinger.unhealthy_withholding_pings", interval_s=self.interval)
            self._healthy_last = healthy
        if not healthy:
            self.pings_withheld += 1
            return False
        sent = self._notifier.watchdog()
        if sent:
            self.pings_sent += 1
        return sent

    async def run(self) -> None:
        """Ping until cancelled. Returns immediately when there is no watchdog to feed."""
        if self.interval is None or not self._notifier.enabled:
            log.info(
                "watchdog_pinger.disabled", reason="no WATCHDOG_USEC" if self.interval is None else "no NOTIFY_SOCKET"
            )
            return
        while True:
            self.tick()
            await self._clock.sleep(self.interval)


__all__ = [
    "STATUS_MAX_CHARS",
    "ProgressHeartbeat",
    "SdNotifier",
    "WatchdogPinger",
    "monotonic_usec",
    "parse_address",
    "sd_notify",
    "watchdog_interval",
]
