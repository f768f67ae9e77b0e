"""The watchdog's own log: one pipeline for structlog and stdlib records, levels that mean something, and the
right shape for where stderr goes. Stage: infrastructure.

- Levels: `promote_level` is the ONE place that decides that a P0/P1 incident opening or escalation is an
  error/warning, that a failed remediation or dead-lettered notification is an error, and so on (keyed by
  the event name and its severity/outcome fields), so `journalctl -p warning` shows what needs a human. It
  only ever raises a level, never lowers one. Filtering by the configured level happens after it.
- stdlib `logging` records (our own modules that use it, APScheduler, docker, httpx warnings) go through
  structlog's `ProcessorFormatter`: the same redaction, timestamps and renderer as everything else, never
  plain text inside a JSON stream. httpx/httpcore stay at WARNING (their INFO lines carry URLs that can be
  secrets).
- Shape: under journald (`$JOURNAL_STREAM` names stderr's device:inode) every line starts with an
  sd-daemon priority prefix (`<3>` error … `<7>` debug), so journald stores the right PRIORITY; JSON lines
  elsewhere; a console renderer on a TTY, coloured unless `NO_COLOR` is set.

It must never be skipped: every line passes `redact_processor`, so a secret that reached an event dict by
mistake is still printed as `***`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from watchdog.secrets import redact_processor

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}
#: sd-daemon(3) prefixes: journald strips them and stores PRIORITY
JOURNAL_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
#: third-party loggers that never log below WARNING (httpx INFO prints URLs, and a Slack URL is a secret)
QUIET_LIBRARIES = ("httpx", "httpcore", "apscheduler", "docker", "urllib3", "asyncio", "dbus_fast")
_HANDLER_MARK = "_vllm_watchdog_handler"

#: severity of an incident edge → level of its log line (P2/P3 stay at info)
_SEVERITY_LEVEL = {"P0": "error", "P1": "warning"}
#: events (by name) that are at least this level whatever the caller chose
_EVENT_LEVEL = {
    "incident remediation_failed": "error",
    "notification dead-lettered": "error",
    "reload rejected: keeping the running config": "error",
    "remediation crashed": "error",
}
_FAILED_OUTCOMES = {"failed", "timeout", "error"}
#: remediation verdicts that mean "a human must act now"
_PAGING_VERDICTS = {"MAX_ATTEMPTS_REACHED", "LADDER_EXHAUSTED", "PRECONDITION_FAILED"}


def _rank(level: str) -> int:
    return LEVELS.get(level, logging.INFO)


def decided_level(event: str, fields: Mapping[str, Any]) -> str | None:
    """The level an event deserves from its meaning, or None to keep the caller's."""
    if event in _EVENT_LEVEL:
        return _EVENT_LEVEL[event]
    if event in ("incident opened", "incident escalated", "incident repeat"):
        return _SEVERITY_LEVEL.get(str(fields.get("severity", "")))
    if event == "remediation action" and str(fields.get("outcome", "")).lower() in _FAILED_OUTCOMES:
        return "error"
    if event == "remediation verdict" and str(fields.get("verdict", "")) in _PAGING_VERDICTS:
        return "warning"
    return None


def promote_level(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: raise `level` to what the event means (never lower it)."""
    want = decided_level(str(event_dict.get("event", "")), event_dict)
    have = str(event_dict.get("level", "info"))
    if want is not None and _rank(want) > _rank(have):
        event_dict["level"] = want
    return event_dict


def level_filter(minimum: int) -> Processor:
    """structlog processor: drop events below `minimum`, judged after `promote_level`."""

    def drop_below(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if _rank(str(event_dict.get("level", "info"))) < minimum:
            raise structlog.DropEvent
        return event_dict

    return drop_below


class JournalRenderer:
    """Render with `inner`, then put the sd-daemon priority prefix in front of every physical line (a
    traceback is several lines; journald takes a prefix per line)."""

    def __init__(self, inner: Processor) -> None:
        self.inner = inner

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        prio = JOURNAL_PRIORITY.get(str(event_dict.get("level", "info")), 6)
        text = self.inner(logger, name, event_dict)
        text = text.decode() if isinstance(text, bytes) else str(text)
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


def under_journald(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is the journal stream systemd connected (`$JOURNAL_STREAM` = "dev:inode")."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):
        return False


def use_color(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """ANSI colours only on a terminal, and never with `NO_COLOR` set (https://no-color.org) or TERM=dumb."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", "") != "" or env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def choose_format(fmt: str, stream: Any, environ: Mapping[str, str] | None = None) -> str:
    """`auto` → journal under journald, console on a TTY, else json. Explicit `json`/`console` are kept,
    but still get priority prefixes under journald (`journal+json`, `journal+console`)."""
    journal = under_journald(stream, environ)
    if fmt == "auto":
        if journal:
            return "journal+json"
        return "console" if _isatty(stream) else "json"
    return f"journal+{fmt}" if journal else fmt


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _renderer(shape: str, stream: Any) -> Processor:
    base = shape.removeprefix("journal+")
    inner: Processor
    if base == "console":
        inner = structlog.dev.ConsoleRenderer(colors=use_color(stream) and not shape.startswith("journal+"))
    else:
        inner = structlog.processors.JSONRenderer()
    return JournalRenderer(inner) if shape.startswith("journal+") else inner


def _shared(minimum: int | None) -> list[Processor]:
    """The steps every record takes; `minimum` None: filtering is the stdlib logger's (a foreign record)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        promote_level,
        *([level_filter(minimum)] if minimum is not None else []),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _add_logger_name(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None and "logger" not in event_dict:
        event_dict["logger"] = record.name
    return event_dict


def setup_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> str:
    """Configure structlog and the stdlib root logger to write to `stream` (stderr). Returns the shape chosen
    (`json`, `console`, `journal+json`, `journal+console`). Safe to call again (the handler is replaced)."""
    out: TextIO = stream if stream is not None else sys.stderr
    minimum = LEVELS.get(level, logging.INFO)
    shape = choose_format(fmt, out)
    renderer = _renderer(shape, out)
    structlog.configure(
        processors=[*_shared(minimum), structlog.processors.format_exc_info, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),  # level_filter judges, after promotion
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_add_logger_name, *_shared(None), structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, redact_processor, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(minimum)
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, minimum))
    return shape


__all__ = ["JOURNAL_PRIORITY", "LEVELS", "choose_format", "decided_level", "promote_level", "setup_logging",
           "under_journald", "use_color"]
