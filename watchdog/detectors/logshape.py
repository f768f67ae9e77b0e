"""The shape of one log line: where its envelope ends, where the emitting component's message starts, and
whether it is vLLM's request/response logging (an *echo*). Stage: detect (helper of the log catalog).

A vLLM line is `[docker timestamp] [(Proc pid=N)] [[rankN]:] LEVEL MM-DD HH:MM:SS [file.py:N] message`
(0.6.x writes `file.py:N]` without the opening bracket; every line of a multi-line record carries the
header, so traceback lines do too; a JSON formatter puts the record in `"message": "…"`). Uvicorn writes
`LEVEL:     message`, torch's C++ logging `[E ProcessGroupNCCL.cpp:563] [Rank 0] message`, and an
exception line is `[module.]Class: message` or the repr `Class('message…')`. `anchor_points` returns
the offsets where a catalog entry with `anchor: start` may begin to match: the body start, the message
start, and after an exception class.
`is_echo` is true for the request/response logging of `vllm/entrypoints/logger.py` (`Received request`,
`Generated response`, `Request … details/JSON body`) and the engines' `Added/Aborted/Finished request`
lines: a user prompt that quotes a stack trace is never failure evidence.

Pure functions on a string: no I/O, never raises.
"""

from __future__ import annotations

import re

# envelopes that carry no meaning for classification, stripped in order (each at most once)
_ENVELOPE = re.compile(
    r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+)?"  # docker logs --timestamps
    r"(?:\[\s*\d+\.\d+\]\s*)?"  # kernel ring-buffer time
    r"(?:\((?:[\w.-]+(?:\s+\w+)?\s+)?pid=\d+(?:,\s*ip=[\w.:]+)?\)\s+)?"  # (EngineCore_DP0 pid=312) / Ray
    r"(?:\[rank\d+\]:\s*)?"  # torch elastic / distributed rank prefix
)
# vLLM record header: 0.6.x `ERROR 11-04 12:53:08 engine.py:158] `, 0.8+ `ERROR 08-14 10:02:11 [core.py:710] `
_VLLM_HEADER = re.compile(
    r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[?[\w./<>-]+:\d+\]\s?"
)
_UVICORN_HEADER = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+")
# torch C++ (glog) header `[E ProcessGroupNCCL.cpp:563] ` / `[E1014 05:55:12.345678 140 ProcessGroupNCCL.cpp:616] `
_CPP_HEADER = re.compile(r"\[[EWIF][\d:. ]*[\w.]*\.(?:cpp|hpp|cc|h):\d+\]\s*(?:\[[^\]]*Rank \d+\]\s*)?")
_EXCEPTION = re.compile(
    r"(?:[A-Za-z_]\w*\.)*(?P<cls>[A-Z]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*|\(['\"])"
)
# a JSON-formatted record (VLLM_LOGGING_CONFIG_PATH with a JSON formatter): its message value
_JSON_MESSAGE = re.compile(r'\{[^{}]*?"(?:message|msg)"\s*:\s*"')
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ECHO = re.compile(
    r"(?:Received request|Generated response|Added request|Aborted request|Finished request"
    r"|Request \S+ (?:details|JSON body))\b"
)


def message_start(text: str) -> tuple[int, int]:
    """(body start after the envelope, message start after a vLLM/uvicorn/C++ record header)."""
    m = _ENVELOPE.match(text)
    body = m.end() if m else 0
    if text.startswith("{", body):
        j = _JSON_MESSAGE.match(text, body)
        if j is not None:
            body = j.end()
    for hdr in (_VLLM_HEADER, _CPP_HEADER, _UVICORN_HEADER):
        h = hdr.match(text, body)
        if h is not None:
            return body, h.end()
    return body, body


def anchor_points(text: str) -> tuple[int, ...]:
    """Offsets where an anchored pattern may start: body, message, exception class and its message."""
    body, msg = message_start(text)
    points = [body] if body == msg else [body, msg]
    e = _EXCEPTION.match(text, msg)
    if e is not None:
        points.append(e.start("cls"))
        points.append(e.end())
    return tuple(points)


def is_echo(text: str) -> bool:
    """True for vLLM's request/response logging lines (whatever the prompt or output quotes)."""
    _body, msg = message_start(text)
    return _ECHO.match(text, msg) is not None


__all__ = ["ANSI", "anchor_points", "is_echo", "message_start"]
