"""Env files (docker compose `KEY=value`): find an assignment and splice a new value into it.

Stage: act (part of `watchdog.remediation.config_edit`). Edits touch only the bytes of the edited value:
every other byte, comment, blank line and quote style stays as it was; duplicate keys resolve like
docker compose (the last one wins). This module must never read or write a file itself (it works on
text) and never re-quote a value in a way compose would read differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from watchdog.remediation.config_edit.settings import ConfigEditError

_ENV_LINE = re.compile(r"[ \t\ufeff]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*")


@dataclass(frozen=True)
class EnvSpan:
    """One `KEY=value` assignment: where its value text lies in the file and what compose reads."""

    key: str
    start: int  # offset of the value text (inside quotes, if quoted)
    end: int
    quote: str  # "", '"' or "'"
    value: str  # the value as docker compose reads it
    line: int  # 1-based


def parse_env(text: str, path: Path) -> list[EnvSpan]:
    """Every assignment in document order; multi-line quoted values are skipped over (never matched)."""
    spans: list[EnvSpan] = []
    pos = 0
    lineno = 0
    n = len(text)
    while pos < n:
        nl = text.find("\n", pos)
        line_end = n if nl < 0 else nl
        lineno += 1
        content_end = line_end - 1 if line_end > pos and text[line_end - 1] == "\r" else line_end
        m = _ENV_LINE.match(text, pos, content_end)
        next_pos = line_end + 1
        if m is not None:
            vstart = m.end()
            first = text[vstart] if vstart < content_end else ""
            if first in ("'", '"'):
                close = _find_close(text, vstart + 1, first)
                if close < 0:
                    raise ConfigEditError(f"{path}:{lineno}: {m.group(1)}: unterminated {first} quote",
                                          code="MALFORMED")
                raw = text[vstart + 1 : close]
                value = _unescape(raw) if first == '"' else raw
                spans.append(EnvSpan(m.group(1), vstart + 1, close, first, value, lineno))
                if "\n" in raw:  # multi-line value: continue after the line holding the closing quote
                    lineno += raw.count("\n")
                    nl2 = text.find("\n", close)
                    next_pos = n if nl2 < 0 else nl2 + 1
            else:
                rest = text[vstart:content_end]
                cm = re.search(r"[ \t]+#", rest)
                raw = rest[: cm.start()] if cm else rest
                raw = raw.rstrip(" \t")
                spans.append(EnvSpan(m.group(1), vstart, vstart + len(raw), "", raw, lineno))
        pos = next_pos
    return spans


def _find_close(text: str, start: int, quote: str) -> int:
    i = start
    while i < len(text):
        c = text[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            return i
        i += 1
    return -1


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw, flags=re.S)


def env_lookup(spans: list[EnvSpan], key: str) -> EnvSpan | None:
    found = None
    for s in spans:
        if s.key == key:
            found = s  # duplicate keys: the last one wins, as in docker compose
    return found


def env_set(text: str, path: Path, key: str, new_value: str) -> str:
    span = env_lookup(parse_env(text, path), key)
    if span is None:
        eol = "\r\n" if "\r\n" in text else "\n"
        sep = "" if not text or text.endswith("\n") else eol
        return f"{text}{sep}{key}={_env_quote(new_value, '')}{eol}"
    return text[: span.start] + _env_quote(new_value, span.quote) + text[span.end :]


def _env_quote(value: str, quote: str) -> str:
    if quote == '"':
        return value.replace("\\", "\\\\").replace('"', '\\"')
    if quote == "'":
        if "'" in value:
            raise ConfigEditError("value contains a single quote and the file quotes it with single quotes",
                                  code="BAD_VALUE")
        return value
    if re.search(r"[\s#'\"\\$]", value):
        raise ConfigEditError(f"value {value[:40]!r} would need quoting; quote the key in the file first",
                              code="BAD_VALUE")
    return value


__all__ = ["EnvSpan", "env_lookup", "env_set", "parse_env"]
