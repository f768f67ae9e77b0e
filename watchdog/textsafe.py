"""Terminal-safe text: target-supplied strings (probe summaries, log lines, evidence, receiver replies)
made harmless before the CLI prints them. Stage: output edge (CLI).

A vLLM server, a container log or a receiver controls some of the text the CLI shows. Printed raw, an
escape sequence in it can recolour, hide or rewrite the operator's terminal (ESC [ 2 J, OSC 52 clipboard
writes, a carriage return that overprints a line, bidi overrides that reorder it). `safe_text` replaces
every such character with a visible `\\xNN`/`\\uNNNN` escape. This module must never drop or reorder the
printable text around what it replaces, and never touch what is stored (only what is shown).
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except TAB/LF, DEL, C1 controls, and the Unicode bidi/format controls that reorder text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_UNSAFE_INLINE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(text: str, *, multiline: bool = False) -> str:
    """`text` with control characters shown as escapes. With `multiline`, TAB and LF are kept."""
    return (_UNSAFE if multiline else _UNSAFE_INLINE).sub(_escape, text)


# In JSON text: C0 controls are always escaped by json.dumps, but with ensure_ascii=False DEL, C1 controls
# (0x9b is a one-byte CSI) and bidi/format controls pass raw. \uXXXX keeps the value and the JSON identical.
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def safe_json(text: str) -> str:
    """JSON text (from json.dumps) with the characters that can drive a terminal written as \\uXXXX escapes:
    the same JSON value, safe to print."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def safe_data(value: Any, depth: int = 0) -> Any:
    """`safe_text` applied to every string inside a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return safe_text(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {safe_data(k, depth + 1): safe_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_data(v, depth + 1) for v in value]
    return value


__all__ = ["safe_data", "safe_json", "safe_text"]
