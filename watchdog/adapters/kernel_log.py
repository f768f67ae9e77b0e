"""Kernel log source (adapter): the host's kernel messages as `LogLine`s, from `journalctl -k -o json
--follow` (with a cursor, so a reconnect resumes where it stopped) where journald exists, else `/dev/kmsg`
(resuming after the last sequence number), else a configured file such as `/var/log/kern.log` (followed
across rotation). Stage: observe (adapter).

`KernelLogWatcher.lines()` is an async iterator that never ends and never raises: a source that fails
or exits is reopened after a back-off (`reconnects`, `last_error` say what happened). Lines are cut at
`max_line_chars`, and `pump()`/`drain()` keep at most `queue_max` lines (the oldest are dropped and
counted) for a consumer that reads in batches. The parsers (`parse_kmsg_record`, `parse_kernel_text`)
are pure and shared with `vllm-watchdog logs classify`.

It must never decide anything about a line (that is `watchdog.detectors.kernel`), never write to the
kernel log, and never run a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from watchdog.adapters.systemd import parse_journal_json
from watchdog.config.host import KernelLogSettings  # `host.kernel_log`: config owns it, re-exported here
from watchdog.model import LogLine

_KMSG = re.compile(r"^(?P<prio>\d+),(?P<seq>\d+),(?P<usec>\d+),[^;]*;(?P<msg>.*)$")


def parse_kmsg_record(raw: str, boot_wall: float | None = None) -> tuple[int, LogLine] | None:
    """One `/dev/kmsg` record (`prio,seq,usec,flags;message` + ` KEY=value` continuation lines) →
    (sequence number, line); `at` is wall time when the boot time is given. None if not a record."""
    first = raw.split("\n", 1)[0]
    m = _KMSG.match(first)
    if m is None:
        return None
    at = None if boot_wall is None else boot_wall + int(m.group("usec")) / 1e6
    return int(m.group("seq")), LogLine(m.group("msg").replace("\\x0a", " "), at)


def parse_kernel_text(text: str) -> list[LogLine]:
    """A saved kernel log: `journalctl -k -o json` export, a `/dev/kmsg` dump, or text (dmesg,
    kern.log, journalctl short output), one LogLine per line."""
    out: list[LogLine] = []
    for raw in text.splitlines():
        s = raw.strip()
        if not s:
            continue
        if s.startswith("{"):
            out.extend(ln for _c, ln in parse_journal_json(s))
            continue
        rec = parse_kmsg_record(s)
        out.append(rec[1] if rec is not None else LogLine(raw.rstrip("\r\n")))
    return out


_TRUNCATED = "…[truncated]"


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - len(_TRUNCATED)] + _TRUNCATED


class KernelLogWatcher:
    """The host kernel log as a never-ending, never-raising stream of lines."""

    def __init__(self, settings: KernelLogSettings, *, which: Callable[[str], str | None] = shutil.which,
                 journald_present: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self._which = which
        # a host journald, or its persistent journal bind-mounted into the watchdog's container
        self._journald_present = journald_present or (
            lambda: Path("/run/systemd/journal").is_dir() or Path("/var/log/journal").is_dir())
        self.cursor: str | None = None  # journald cursor of the last line read
        self.kmsg_seq: int | None = None  # last /dev/kmsg sequence number read
        self.reconnects = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.source: str | None = None
        self._file_pos: tuple[int, int] | None = None  # (inode, offset) of the followed file
        self.buffer: deque[LogLine] = deque(maxlen=settings.queue_max)

    def resolve_source(self) -> str:
        """The source `auto` stands for on this host."""
        s = self.settings
        if s.source != "auto":
            return s.source
        if self._journald_present() and self._which(s.journalctl):
            return "journal"
        if os.access(s.kmsg_path, os.R_OK):
            return "kmsg"
        return "file"

    def unreadable(self) -> str | None:
        """Why the source `resolve_source()` picks cannot be read on this host, or None when it can."""
        s = self.settings
        src = self.resolve_source()
        if src == "journal":
            return None if self._which(s.journalctl) else f"journal: {s.journalctl} not found"
        path = s.kmsg_path if src == "kmsg" else s.path
        if os.access(path, os.R_OK):
            return None
        why = "no journald, /dev/kmsg not readable, " if s.source == "auto" else ""
        return f"{why}{path} {'missing' if not path.exists() else 'not readable'}"

    async def lines(self) -> AsyncGenerator[LogLine, None]:
        """Kernel lines forever; a failing source is reopened after a back-off. Cancel to stop."""
        backoff = self.settings.reconnect_s
        while True:
            self.source = self.resolve_source()
            opened = time.monotonic()
            try:
                reader = {"journal": self._journal, "kmsg": self._kmsg, "file": self._file}[self.source]
                async with contextlib.aclosing(reader()) as source:  # closing us closes the source now
                    async for ln in source:
                        yield LogLine(_cut(ln.text, self.settings.max_line_chars), ln.at)
                self.last_error = f"{self.source} source ended"
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the source is broken, not the watchdog: report and reopen
                self.last_error = f"{self.source}: {type(e).__name__}: {e}"[:300]
            self.reconnects += 1
            if time.monotonic() - opened > self.settings.reconnect_max_s:
                backoff = self.settings.reconnect_s  # it ran a good while: start the back-off again
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    async def pump(self) -> None:
        """Fill `buffer` from `lines()` until cancelled (the oldest lines beyond `queue_max` are dropped)."""
        async for ln in self.lines():
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            self.buffer.append(ln)

    def drain(self, max_lines: int = 2000) -> list[LogLine]:
        """Up to `max_lines` buffered lines, oldest first."""
        n = min(max_lines, len(self.buffer))
        return [self.buffer.popleft() for _ in range(n)]

    # ------------------------------------------------------------------ sources
    async def _journal(self) -> AsyncGenerator[LogLine, None]:
        s = self.settings
        argv = [s.journalctl, "-k", "-o", "json", "--follow", "--no-pager"]
        argv += ["--after-cursor", self.cursor] if self.cursor else ["--lines", str(s.backlog_lines)]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        try:
            assert proc.stdout is not None
            async for raw in _read_lines(proc.stdout, max(s.max_line_chars * 4, 65536)):
                for cursor, ln in parse_journal_json(raw):
                    if cursor:
                        self.cursor = cursor
                    yield ln
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: no child keeps our pipe open
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)

    async def _kmsg(self) -> AsyncGenerator[LogLine, None]:
        fd = os.open(self.settings.kmsg_path, os.O_RDONLY | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        boot_wall = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        if self.kmsg_seq is None and self.settings.backlog_lines == 0:
            with contextlib.suppress(OSError):
                os.lseek(fd, 0, os.SEEK_END)  # first open: only records logged from now on
        try:
            loop.add_reader(fd, ready.set)
            while True:
                try:
                    raw = os.read(fd, 8192).decode("utf-8", "replace")
                except BlockingIOError:
                    ready.clear()
                    await ready.wait()
                    continue
                except BrokenPipeError:  # records were overwritten before we read them: go on
                    continue
                if not raw:
                    return
                rec = parse_kmsg_record(raw, boot_wall)
                if rec is None or (self.kmsg_seq is not None and rec[0] <= self.kmsg_seq):
                    continue
                self.kmsg_seq = rec[0]
                yield rec[1]
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            os.close(fd)

    async def _file(self) -> AsyncGenerator[LogLine, None]:
        s = self.settings
        path = s.path
        while True:
            st = os.stat(path)  # FileNotFoundError: reported, reopened after the back-off
            inode, offset = self._file_pos or (st.st_ino, -1)
            if inode != st.st_ino or (offset > st.st_size):
                offset = 0  # rotated or truncated: the new file from its start
            if offset < 0:  # first open: only the last backlog_lines
                offset = _tail_offset(path, st.st_size, s.backlog_lines)
            if st.st_size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(st.st_size - offset)
                end = data.rfind(b"\n") + 1  # keep a partial last line for the next poll
                for raw in data[:end].decode("utf-8", "replace").splitlines():
                    yield LogLine(raw)
                offset += end
            self._file_pos = (st.st_ino, offset)
            await asyncio.sleep(s.poll_s)


def _tail_offset(path: Path, size: int, lines: int) -> int:
    """Offset of the start of the last `lines` lines of the file (reads at most 1 MiB)."""
    if lines <= 0 or size == 0:
        return size
    start = max(0, size - 1_048_576)
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(size - start)
    cut = len(data)
    for _ in range(lines + 1):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return start
    return start + cut + 1


async def _read_lines(stream: asyncio.StreamReader, max_bytes: int) -> AsyncGenerator[str, None]:
    """Lines of a stream; a line longer than `max_bytes` is cut there (its rest is skipped)."""
    buf = b""
    skipping = False
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            if buf and not skipping:
                yield buf.decode("utf-8", "replace")
            return
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > max_bytes:
                    if not skipping:
                        yield buf[:max_bytes].decode("utf-8", "replace")
                    skipping, buf = True, b""
                break
            line, buf = buf[:nl], buf[nl + 1:]
            if not skipping:
                yield line[:max_bytes].decode("utf-8", "replace")
            skipping = False


__all__ = ["KernelLogSettings", "KernelLogWatcher", "parse_kernel_text", "parse_kmsg_record"]
