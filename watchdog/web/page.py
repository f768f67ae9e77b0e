"""The status page: one HTML document with inline CSS and JS (no external assets, works air-gapped),
with the current state embedded so that the first paint needs no second request. Stage: operator edge.

The page builds its DOM with `textContent` only; the state is embedded as JSON inside a
`<script type="application/json">` block with `<`, `>` and `&` escaped, so no target-supplied string can
close the block or become markup. A Content-Security-Policy allows only this page's own inline script
and style (by hash) and same-origin requests. This module must never interpolate data into HTML.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from watchdog.web.http import Response

TEMPLATE = files("watchdog.web").joinpath("page.html").read_text(encoding="utf-8")
_MARK = "__STATE__"


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _inline(tag: str) -> str:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", TEMPLATE, re.S)
    assert m is not None, f"page.html has no inline <{tag}>"
    return m.group(1)


CSP = (f"default-src 'none'; script-src {_sha256(_inline('script'))}; style-src {_sha256(_inline('style'))}; "
       "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def embed(doc: Mapping[str, Any]) -> str:
    """JSON that is safe inside a <script> block: no `<`, `>` or `&` survives unescaped."""
    text = json.dumps(doc, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(doc: Mapping[str, Any]) -> bytes:
    head, _, tail = TEMPLATE.partition(_MARK)
    return (head + embed(doc) + tail).encode("utf-8")


def page_response(doc: Mapping[str, Any]) -> Response:
    return Response(200, "text/html; charset=utf-8", render(doc), HEADERS)
