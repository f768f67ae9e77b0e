"""The kernel log source: /dev/kmsg records, saved kernel logs, and the followed journal/kmsg/file sources
(cursor resume, rotation, bounded lines and buffer, never raising, reconnecting)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from watchdog.adapters.kernel_log import KernelLogSettings, KernelLogWatcher, parse_kernel_text, parse_kmsg_record
from watchdog.model import LogLine

XID79 = "NVRM: Xid (PCI:0000:3b:00): 79, pid=312, name=python3, GPU has fallen off the bus."


async def take(it: AsyncGenerator[LogLine, None], n: int) -> list[str]:
    """The next n lines of an iterator, failing the test if they do not come within 5 s."""
    async with asyncio.timeout(5):
        return [(await anext(it)).text for _ in range(n)]


def fast(**kw: object) -> KernelLogSettings:
    return KernelLogSettings.model_validate({"enabled": True, "reconnect_s": 0.01, "reconnect_max_s": 0.05,
                                             "poll_s": 0.01, **kw})


async def test_first_open_skips_history_by_default(tmp_path: Path) -> None:
    """With the default backlog of 0, lines already in the log at the first open are not read again (an old
    Xid is not re-reported at every watchdog restart); lines appended afterwards are."""
    log = tmp_path / "kern.log"
    log.write_text(f"{XID79} (old)\n")
    w = KernelLogWatcher(fast(source="file", path=log))
    it = w.lines()
    task = asyncio.ensure_future(take(it, 1))
    await asyncio.sleep(0.1)
    with log.open("a") as fh:
        fh.write(f"{XID79} (new)\n")
    assert await task == [f"{XID79} (new)"]
    await it.aclose()


def test_kmsg_record() -> None:
    """A /dev/kmsg record gives its sequence number, message and (with the boot time) its wall time."""
    rec = parse_kmsg_record(f"4,1502,1200100000,-;{XID79}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n", 1000.0)
    assert rec is not None and rec[0] == 1502 and rec[1].text == XID79 and rec[1].at == 1000.0 + 1200.1
    assert parse_kmsg_record("Oct 02 05:00:00 gpu1 kernel: hello") is None


def test_parse_saved_kernel_logs() -> None:
    """dmesg text, a kmsg dump and a journalctl -k -o json export all give the kernel messages."""
    journal = json.dumps({"__CURSOR": "s=1;i=2", "__REALTIME_TIMESTAMP": "1727784611000000", "MESSAGE": XID79})
    lines = parse_kernel_text(f"[12345.678901] {XID79}\n\n4,1,2,-;{XID79}\n{journal}\n")
    assert [ln.text for ln in lines] == [f"[12345.678901] {XID79}", XID79, XID79]
    assert lines[2].at == 1727784611.0


async def test_file_source_backlog_follow_and_rotation(tmp_path: Path) -> None:
    """The file source starts with the last backlog_lines, follows appends, and reads a rotated file from its
    start; a line over max_line_chars is cut."""
    log = tmp_path / "kern.log"
    log.write_text("old 1\nold 2\nold 3\n")
    w = KernelLogWatcher(fast(source="file", path=log, backlog_lines=2, max_line_chars=100))
    it = w.lines()
    assert await take(it, 2) == ["old 2", "old 3"]
    with log.open("a") as f:
        f.write(f"{XID79}\n" + "x" * 500 + "\n")
    got = await take(it, 2)
    assert got[0] == XID79 and len(got[1]) == 100 and got[1].endswith("[truncated]")
    log.rename(tmp_path / "kern.log.1")
    log.write_text("new 1\n")
    assert await take(it, 1) == ["new 1"]
    assert w.source == "file"
    await it.aclose()


async def test_missing_source_never_raises_and_reconnects(tmp_path: Path) -> None:
    """A file that does not exist yet is an error to report and retry, not an exception; it is read once it
    appears."""
    log = tmp_path / "kern.log"
    w = KernelLogWatcher(fast(source="file", path=log, backlog_lines=200))  # the line is there at first open
    it = w.lines()
    task = asyncio.ensure_future(take(it, 1))
    await asyncio.sleep(0.1)
    assert not task.done() and w.reconnects >= 1 and "FileNotFoundError" in (w.last_error or "")
    log.write_text(f"{XID79}\n")
    assert await task == [XID79]
    await it.aclose()


def fake_journalctl(tmp_path: Path) -> Path:
    """An executable that records its argv and prints journal JSON: two entries, or one after a cursor."""
    script = tmp_path / "journalctl"
    argv_log = tmp_path / "argv.txt"
    first = [{"__CURSOR": f"c{i}", "__REALTIME_TIMESTAMP": "1727784611000000", "MESSAGE": f"line {i}"}
             for i in (1, 2)]
    after = [{"__CURSOR": "c3", "__REALTIME_TIMESTAMP": "1727784612000000", "MESSAGE": XID79}]
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {argv_log}\n'
        'case "$*" in *--after-cursor*)\n'
        + "".join(f"  echo '{json.dumps(e)}'\n" for e in after) + "  sleep 30;;\n"
        "*)\n" + "".join(f"  echo '{json.dumps(e)}'\n" for e in first) + ";;\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def test_journal_source_resumes_after_its_cursor(tmp_path: Path) -> None:
    """journalctl -k -o json --follow is read; when it exits, it is restarted with --after-cursor of the last
    line read, so nothing is read twice."""
    jc = fake_journalctl(tmp_path)
    w = KernelLogWatcher(fast(source="auto", journalctl=str(jc), backlog_lines=50),
                         which=lambda name: name, journald_present=lambda: True)
    it = w.lines()
    assert await take(it, 3) == ["line 1", "line 2", XID79]
    assert w.source == "journal" and w.cursor == "c3" and w.reconnects == 1
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[0] == "-k -o json --follow --no-pager --lines 50"
    assert argv[1] == "-k -o json --follow --no-pager --after-cursor c2"
    await it.aclose()


async def test_kmsg_source_reads_records(tmp_path: Path) -> None:
    """The kmsg source reads one record per read, skipping sequence numbers it has already seen."""
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR)
    try:
        w = KernelLogWatcher(fast(source="kmsg", kmsg_path=fifo))
        it = w.lines()
        task = asyncio.ensure_future(take(it, 2))
        for rec in (f"6,10,5,-;{XID79}\n", "6,10,5,-;duplicate\n", "6,11,6,-;next\n"):
            os.write(wfd, rec.encode())
            await asyncio.sleep(0.05)
        assert await task == [XID79, "next"] and w.kmsg_seq == 11
        await it.aclose()
    finally:
        os.close(wfd)


async def test_pump_keeps_a_bounded_buffer(tmp_path: Path) -> None:
    """pump() keeps at most queue_max lines, counts what it dropped, and drain() hands out the oldest first."""
    log = tmp_path / "kern.log"
    log.write_text("".join(f"l{i}\n" for i in range(15)))
    w = KernelLogWatcher(fast(source="file", path=log, backlog_lines=100, queue_max=10))
    task = asyncio.ensure_future(w.pump())
    for _ in range(100):
        if w.dropped == 5:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [ln.text for ln in w.drain(3)] == ["l5", "l6", "l7"] and w.dropped == 5 and len(w.drain()) == 7


def test_auto_picks_kmsg_then_file(tmp_path: Path) -> None:
    """Without journald, auto reads /dev/kmsg when readable, else the configured file."""
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    s = fast(source="auto", kmsg_path=kmsg)
    assert KernelLogWatcher(s, journald_present=lambda: False).resolve_source() == "kmsg"
    s2 = fast(source="auto", kmsg_path=tmp_path / "absent")
    assert KernelLogWatcher(s2, journald_present=lambda: True, which=lambda n: None).resolve_source() == "file"


async def test_real_dev_kmsg_when_readable() -> None:
    """On a host whose /dev/kmsg is readable, the kmsg source reads its records with boot-based wall times."""
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable here")
    w = KernelLogWatcher(fast(source="kmsg", backlog_lines=200))  # read history: nothing new may be logged
    it = w.lines()
    async with asyncio.timeout(5):
        first = await anext(it)
    await it.aclose()
    assert first.text and first.at is not None and first.at <= time.time() and w.kmsg_seq is not None
