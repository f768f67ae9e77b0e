"""structlog configuration: JSON lines for machines, a readable console renderer on a terminal, and the
secret-redaction processor on every event. Stage: infrastructure.

It must never be skipped: every log line passes `redact_processor`, so a secret that reached an event
dict by mistake is still printed as `***`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from watchdog.secrets import RedactFilter, redact_processor

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,  # after the traceback is text, before anything is rendered
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # stdlib loggers (apscheduler, httpx): warnings only, redacted; httpx INFO would print URLs with secrets
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if not any(isinstance(f, RedactFilter) for h in root.handlers for f in h.filters):
        h = logging.StreamHandler(stream)
        h.addFilter(RedactFilter())
        root.addHandler(h)
    for noisy in ("httpx", "httpcore", "apscheduler", "docker", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
