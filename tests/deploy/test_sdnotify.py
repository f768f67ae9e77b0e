"""sd_notify exchange against real unix datagram sockets (path and abstract namespace), and the pinger."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.adapters.sdnotify import (
    ProgressHeartbeat,
    SdNotifier,
    WatchdogPinger,
    parse_address,
    sd_notify,
    watchdog_interval,
)
from watchdog.clock import FakeClock


class Receiver:
    """A bound AF_UNIX datagram socket playing the service manager."""

    def __init__(self, sock: socket.socket, raw_address: str) -> None:
        self.sock = sock
        self.raw_address = raw_address

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, each parsed into its KEY=VALUE fields."""
        out: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            fields = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n"))
            out.append(fields)


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.setblocking(False)
    try:
        yield Receiver(s, path)
    finally:
        s.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"vllm-watchdog-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.setblocking(False)
    try:
        yield Receiver(s, "@" + name)
    finally:
        s.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    rec: Receiver = request.getfixturevalue(f"{request.param}_receiver")
    return rec


def test_parse_address_forms() -> None:
    """A path stays a path, `@x` becomes an abstract address, vsock and empty values are unsupported."""
    assert parse_address("/run/systemd/notify") == "/run/systemd/notify"
    assert parse_address("@abc") == "\0abc"
    assert parse_address("vsock:2:1234") is None
    assert parse_address("@") is None
    assert parse_address("") is None
    assert parse_address(None) is None


def test_ready_status_stopping_exchange(receiver: Receiver) -> None:
    """READY, STATUS and STOPPING arrive as separate datagrams with the right fields, UTF-8 intact."""
    n = SdNotifier(receiver.raw_address)
    assert n.enabled
    assert n.ready("watching 1 target")
    assert n.status("gemma — 2 incidents open ✓")
    assert n.stopping()
    msgs = receiver.messages()
    assert msgs == [
        {"READY": "1", "STATUS": "watching 1 target"},
        {"STATUS": "gemma — 2 incidents open ✓"},
        {"STOPPING": "1"},
    ]


def test_notifier_reads_notify_socket_from_environment(receiver: Receiver) -> None:
    """Without an explicit address the notifier uses $NOTIFY_SOCKET."""
    n = SdNotifier(environ={"NOTIFY_SOCKET": receiver.raw_address})
    assert n.watchdog()
    assert receiver.messages() == [{"WATCHDOG": "1"}]


def test_reloading_carries_monotonic_usec(receiver: Receiver) -> None:
    """RELOADING=1 is sent together with MONOTONIC_USEC taken from CLOCK_MONOTONIC in microseconds."""
    n = SdNotifier(receiver.raw_address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.ready()
    reload_msg, ready_msg = receiver.messages()
    assert reload_msg["RELOADING"] == "1"
    assert reload_msg["STATUS"] == "reloading config"
    assert reload_msg["MONOTONIC_USEC"].isdigit()
    assert before <= int(reload_msg["MONOTONIC_USEC"]) <= after
    assert ready_msg == {"READY": "1"}


def test_status_is_forced_to_one_line(receiver: Receiver) -> None:
    """A multi-line status cannot inject extra assignments: newlines become spaces."""
    n = SdNotifier(receiver.raw_address)
    assert n.status("line one\nREADY=1\r\nline three")
    assert receiver.messages() == [{"STATUS": "line one READY=1 line three"}]


def test_raw_field_with_newline_is_refused(receiver: Receiver) -> None:
    """send() refuses a field containing a newline and returns False instead of raising."""
    n = SdNotifier(receiver.raw_address)
    assert n.send("STATUS=a\nREADY=1") is False
    assert receiver.messages() == []


def test_failures_return_false_and_never_raise(tmp_path: Path) -> None:
    """No socket, a missing socket file, a non-socket file or vsock all return False without raising."""
    assert sd_notify("READY=1", environ={}) is False
    assert SdNotifier(environ={}).ready() is False
    assert SdNotifier(str(tmp_path / "missing.sock")).ready() is False
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert SdNotifier(str(plain)).watchdog() is False
    assert SdNotifier("vsock:2:99").ready() is False
    assert SdNotifier(f"@vllm-watchdog-nobody-{uuid.uuid4().hex}").ready() is False


def test_full_receive_queue_does_not_block(path_receiver: Receiver) -> None:
    """When the manager's queue is full, sends fail fast (non-blocking) instead of stalling the loop."""
    n = SdNotifier(path_receiver.raw_address)
    results = [n.status("x" * 400) for _ in range(5000)]
    assert results[0] is True
    assert False in results


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval_honours_usec_and_pid(env: dict[str, str], expected: float | None) -> None:
    """The ping interval is half WATCHDOG_USEC, only for the process WATCHDOG_PID names; junk means none."""
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_interval_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no explicit pid, WATCHDOG_PID is compared with os.getpid()."""
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 1.0


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_pinger_cadence_is_half_the_watchdog_interval(receiver: Receiver) -> None:
    """With WatchdogSec=30 the pinger sends WATCHDOG=1 at start and then exactly every 15 s."""
    clock = FakeClock()
    interval = watchdog_interval({"WATCHDOG_USEC": "30000000"})
    assert interval == 15.0
    pinger = WatchdogPinger(SdNotifier(receiver.raw_address), lambda: True, clock, interval)
    task = asyncio.create_task(pinger.run())
    try:
        await settle()
        assert receiver.messages() == [{"WATCHDOG": "1"}]
        clock.advance(14.9)
        await settle()
        assert receiver.messages() == []
        clock.advance(0.1)
        await settle()
        assert receiver.messages() == [{"WATCHDOG": "1"}]
        for _ in range(4):
            clock.advance(15.0)
            await settle()
        assert len(receiver.messages()) == 4
        assert pinger.pings_sent == 6
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_unhealthy_loop_stops_pings_and_recovery_resumes_them(receiver: Receiver) -> None:
    """While is_healthy() is False no WATCHDOG=1 leaves; pings resume when health returns."""
    clock = FakeClock()
    healthy = {"v": True}
    pinger = WatchdogPinger(SdNotifier(receiver.raw_address), lambda: healthy["v"], clock, 5.0)
    task = asyncio.create_task(pinger.run())
    try:
        await settle()
        assert len(receiver.messages()) == 1
        healthy["v"] = False
        for _ in range(6):  # 30 s: systemd (WatchdogSec=10) would have restarted us by now
            clock.advance(5.0)
            await settle()
        assert receiver.messages() == []
        assert pinger.pings_withheld == 6
        healthy["v"] = True
        clock.advance(5.0)
        await settle()
        assert receiver.messages() == [{"WATCHDOG": "1"}]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_wedged_loop_without_progress_stops_pings(receiver: Receiver) -> None:
    """A daemon loop that stops beating its ProgressHeartbeat stops the pings once the beat is too old."""
    clock = FakeClock()
    beat = ProgressHeartbeat(clock, max_age=20.0)

    async def daemon_loop(wedge_after: int) -> None:
        for _ in range(wedge_after):
            beat.beat()
            await clock.sleep(5.0)
        await asyncio.Event().wait()  # wedged: never progresses again, never returns

    pinger = WatchdogPinger(SdNotifier(receiver.raw_address), beat.fresh, clock, 5.0)
    loop_task = asyncio.create_task(daemon_loop(wedge_after=3))
    ping_task = asyncio.create_task(pinger.run())
    try:
        sent_per_step: list[int] = []
        await settle()
        sent_per_step.append(len(receiver.messages()))
        for _ in range(10):
            clock.advance(5.0)
            await settle()
            sent_per_step.append(len(receiver.messages()))
        # beats at t=0,5,10; the last beat is fresh (age <= 20 s) until t=30, then pings stop for good.
        assert sent_per_step == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
        assert not beat.fresh()
    finally:
        for t in (loop_task, ping_task):
            t.cancel()
        await asyncio.gather(loop_task, ping_task, return_exceptions=True)


async def test_health_function_that_raises_withholds_the_ping(receiver: Receiver) -> None:
    """A health function that raises counts as unhealthy: no ping, no crash of the pinger."""

    def broken() -> bool:
        raise RuntimeError("scheduler gone")

    pinger = WatchdogPinger(SdNotifier(receiver.raw_address), broken, FakeClock(), 5.0)
    assert pinger.tick() is False
    assert receiver.messages() == []
    assert pinger.pings_withheld == 1


async def test_pinger_without_watchdog_env_returns_at_once(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without WATCHDOG_USEC (or without a notify socket) run() returns immediately and sends nothing."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(WatchdogPinger(SdNotifier(receiver.raw_address), lambda: True, FakeClock()).run(), 1)
    await asyncio.wait_for(WatchdogPinger(SdNotifier(environ={}), lambda: True, FakeClock(), 5.0).run(), 1)
    assert receiver.messages() == []


def test_bad_arguments_are_rejected() -> None:
    """A non-positive interval or heartbeat age is a programming error, reported at construction."""
    with pytest.raises(ValueError, match="interval"):
        WatchdogPinger(SdNotifier(environ={}), lambda: True, FakeClock(), 0)
    with pytest.raises(ValueError, match="max_age"):
        ProgressHeartbeat(FakeClock(), 0)
