"""Human text of a notification: what on-call needs at 3 a.m. Stage: notify (render, pure).

Builds, from one `Notification`, a title line `[P0] target: summary` and sections: what happened,
what was seen (probe results, the classified log line, metric values), what was done and its
outcome, the runbook step to take next, other incidents grouped into this message, and the status
page link. Receivers use the same content (Slack blocks, email text, webhook `text`, PagerDuty
`custom_details`, Alertmanager `description`). Payloads are capped and the cut says
`… (truncated N bytes)`. Per-receiver templates run in Jinja2's `SandboxedEnvironment` with
`StrictUndefined`; `validate_template` checks them at `check` time.

Keys of `Notification.details` that are rendered specially (anything else goes under "Other details"):
`evidence` (mapping), `probes` (list of {probe, status, summary}), `log_line` (str), `log_pattern` (str),
`metrics` (mapping), `action` (str or {name, outcome, reason}), `actions` (list of those), `outcome`
(str), `runbook` (str: the next step), `runbook_url` (str), `previous_severity` (str, on escalation).

This module must never do I/O, read a secret, or raise on odd input: any JSON value renders.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from watchdog.config.receivers import ReceiverBase
from watchdog.model import EventKind, Notification, Severity

VALUE_MAX_CHARS = 600  # one evidence value (e.g. a long log line) is cut at this many characters
SPECIAL_KEYS = (
    "evidence",
    "probes",
    "log_line",
    "log_pattern",
    "metrics",
    "action",
    "actions",
    "outcome",
    "runbook",
    "runbook_url",
    "previous_severity",
)

_EVENT_WORD = {
    EventKind.OPENED: "Opened",
    EventKind.ESCALATED: "Escalated",
    EventKind.REMEDIATION_STARTED: "Remediation started",
    EventKind.REMEDIATION_SUCCEEDED: "Remediation succeeded",
    EventKind.REMEDIATION_FAILED: "Remediation failed",
    EventKind.REPEAT: "Still open",
    EventKind.RESOLVED: "Resolved",
}
_TITLE_TAG = {
    EventKind.ESCALATED: "ESCALATED ",
    EventKind.REMEDIATION_STARTED: "REMEDIATING ",
    EventKind.REMEDIATION_SUCCEEDED: "REMEDIATED ",
    EventKind.REMEDIATION_FAILED: "REMEDIATION FAILED ",
    EventKind.RESOLVED: "RESOLVED ",
}
SEVERITY_WORD = {Severity.P0: "critical", Severity.P1: "high", Severity.P2: "medium", Severity.P3: "low"}


# ----------------------------------------------------------------------------------------- capping


def cap_bytes(text: str, max_bytes: int | None) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes, ending with `… (truncated N bytes)` when cut."""
    if max_bytes is None:
        return text
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    # The note for N = len(raw) is at least as long as the real note, so this keeps the result in bounds.
    keep = max(0, max_bytes - len(f"… (truncated {len(raw)} bytes)".encode()))
    head = raw[:keep].decode("utf-8", errors="ignore")  # never split a character
    out = head + f"… (truncated {len(raw) - len(head.encode('utf-8'))} bytes)"
    if len(out.encode("utf-8")) > max_bytes:  # max_bytes smaller than the note itself
        return out.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    return out


def cap_chars(text: str, max_chars: int | None) -> str:
    """`text` cut to at most `max_chars` characters (Slack counts characters), with a note when cut."""
    if max_chars is None or len(text) <= max_chars:
        return text
    keep = max(0, max_chars - len(f"… (truncated {len(text)} chars)"))
    return (text[:keep] + f"… (truncated {len(text) - keep} chars)")[:max_chars]


# ----------------------------------------------------------------------------------------- values


def fmt_value(value: Any, max_chars: int = VALUE_MAX_CHARS) -> str:
    """One JSON value as a short line: strings as-is, numbers compact, objects as sorted JSON."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, int):
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\r", "")
    return cap_chars(text, max_chars)


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _lines_of_mapping(m: Mapping[str, Any], indent: str = "  ") -> list[str]:
    return [f"{indent}{k}: {fmt_value(v)}" for k, v in m.items()]


# ----------------------------------------------------------------------------------------- render


@dataclass(frozen=True, slots=True)
class Section:
    heading: str
    body: str


@dataclass(frozen=True, slots=True)
class Rendered:
    """The human content of one notification. `text()` joins it into plain text, capped."""

    title: str
    sections: tuple[Section, ...]

    def section(self, heading: str) -> str:
        for s in self.sections:
            if s.heading == heading:
                return s.body
        return ""

    def body(self) -> str:
        return "\n\n".join(f"{s.heading}\n{s.body}" for s in self.sections)

    def text(self, max_bytes: int | None = None) -> str:
        return cap_bytes(f"{self.title}\n\n{self.body()}", max_bytes)


def title_line(n: Notification) -> str:
    """`[P0] target: summary` (with RESOLVED/ESCALATED/… after the severity for non-open edges)."""
    summary = (n.summary or n.title or n.kind).splitlines()[0] if (n.summary or n.title or n.kind) else ""
    return cap_chars(f"[{n.severity.value}] {_TITLE_TAG.get(n.event, '')}{n.target}: {summary}", 250)


def _what_happened(n: Notification) -> str:
    word = _EVENT_WORD.get(n.event, str(n.event))
    lines = [f"{word}: {n.kind} on {n.target} — {n.severity.value} ({SEVERITY_WORD[n.severity]})"]
    if n.event is EventKind.ESCALATED and n.details.get("previous_severity"):
        lines.append(f"Escalated from {fmt_value(n.details['previous_severity'], 10)}")
    lines.append(f"Incident #{n.incident_id}, open since {fmt_time(n.opened_at)}")
    if n.resolved_at is not None:
        lines.append(f"Resolved at {fmt_time(n.resolved_at)} after {fmt_duration(n.resolved_at - n.opened_at)}")
    elif n.event is EventKind.REPEAT:
        lines.append(f"Open for {fmt_duration(n.created_at - n.opened_at)}")
    if n.labels:
        lines.append("Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items())))
    if n.summary and n.title and n.title != n.summary:
        lines.append(n.title)
    return "\n".join(lines)


def _what_was_seen(d: Mapping[str, Any]) -> str:
    lines: list[str] = []
    probes = d.get("probes")
    if isinstance(probes, Sequence) and not isinstance(probes, str):
        for p in probes:
            if isinstance(p, Mapping):
                name = fmt_value(p.get("probe", "probe"), 60)
                status = fmt_value(p.get("status", "?"), 20)
                lines.append(f"- probe {name}: {status} — {fmt_value(p.get('summary', ''))}")
            else:
                lines.append(f"- {fmt_value(p)}")
    if d.get("log_line"):
        pattern = f" [{fmt_value(d['log_pattern'], 80)}]" if d.get("log_pattern") else ""
        lines.append(f"- log{pattern}: {fmt_value(d['log_line'])}")
    metrics = d.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        lines.append("- metrics:")
        lines.extend(_lines_of_mapping(metrics, "    "))
    evidence = d.get("evidence")
    if isinstance(evidence, Mapping) and evidence:
        lines.extend(f"- {k}: {fmt_value(v)}" for k, v in evidence.items())
    elif evidence not in (None, "", [], {}):
        lines.append(f"- {fmt_value(evidence)}")
    return "\n".join(lines)


def _action_line(a: Any) -> str:
    if isinstance(a, Mapping):
        name = fmt_value(a.get("name") or a.get("action") or "action", 80)
        outcome = a.get("outcome")
        reason = a.get("reason")
        tail = f" → {fmt_value(outcome, 40)}" if outcome else ""
        tail += f" ({fmt_value(reason, 300)})" if reason else ""
        return f"- {name}{tail}"
    return f"- {fmt_value(a)}"


def _what_was_done(d: Mapping[str, Any]) -> str:
    lines: list[str] = []
    if d.get("action") not in (None, ""):
        lines.append(_action_line(d["action"]))
    actions = d.get("actions")
    if isinstance(actions, Sequence) and not isinstance(actions, str):
        lines.extend(_action_line(a) for a in actions)
    if d.get("outcome") not in (None, ""):
        lines.append(f"Outcome: {fmt_value(d['outcome'])}")
    return "\n".join(lines)


def _grouped(n: Notification) -> str:
    lines = []
    for g in n.grouped:
        sev = fmt_value(g.get("severity", "?"), 4)
        kind = fmt_value(g.get("kind", "?"), 60)
        summary = fmt_value(g.get("summary", ""), 300)
        lines.append(f"- [{sev}] {kind}: {summary}")
    return "\n".join(lines)


def render(n: Notification) -> Rendered:
    """The default human content of `n` (no template)."""
    d = n.details
    sections = [Section("What happened", _what_happened(n))]
    seen = _what_was_seen(d)
    if seen:
        sections.append(Section("What was seen", seen))
    done = _what_was_done(d)
    if done:
        sections.append(Section("What was done", done))
    if n.event is EventKind.RESOLVED:
        step = "None: the condition has cleared." + (
            f" Check the cause later: {fmt_value(d['runbook'])}" if d.get("runbook") else ""
        )
    elif d.get("runbook"):
        step = fmt_value(d["runbook"], 2000)
    else:
        step = "No runbook step recorded for this kind; look at the status page and the server's logs."
    if d.get("runbook_url"):
        step += f"\nRunbook: {fmt_value(d['runbook_url'], 500)}"
    sections.append(Section("Next step", step))
    if n.grouped:
        sections.append(Section(f"Also affected ({len(n.grouped)} grouped)", _grouped(n)))
    other = {k: v for k, v in d.items() if k not in SPECIAL_KEYS}
    if other:
        sections.append(Section("Other details", "\n".join(_lines_of_mapping(other, "- "))))
    if n.status_url:
        sections.append(Section("Status page", n.status_url))
    return Rendered(title=title_line(n), sections=tuple(sections))


# ----------------------------------------------------------------------------------------- templates

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def template_context(n: Notification, rendered: Rendered) -> dict[str, Any]:
    """Names a template can use: every Notification field (`severity`, `target`, `details`, …) plus
    `title`, `text` (the default rendered text), `body` (sections without the title), `sections`
    ({heading: body}) and `notification` (the whole dict)."""
    doc = n.to_dict()
    return {
        **doc,
        "notification": doc,
        "title": rendered.title,
        "text": rendered.text(),
        "body": rendered.body(),
        "sections": {s.heading: s.body for s in rendered.sections},
        "severity_word": SEVERITY_WORD[n.severity],
    }


class MessageTemplate:
    """A per-receiver message template (Jinja2, sandboxed, undefined names are errors)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = _ENV.from_string(source)  # raises TemplateSyntaxError

    def render(self, n: Notification, rendered: Rendered) -> str:
        return self._template.render(template_context(n, rendered))


def _sample_notification() -> Notification:
    return Notification(
        id="sample-1",
        event=EventKind.OPENED,
        incident_id=1,
        fingerprint="0123456789abcdef01234567",
        target="vllm-0",
        kind="service_down",
        severity=Severity.P0,
        title="vLLM server down",
        summary="GET /health: connection refused",
        created_at=1_800_000_000.0,
        opened_at=1_800_000_000.0,
        labels={"instance": "gpu-host-1"},
        details={
            "evidence": {"liveness": "connection refused"},
            "probes": [{"probe": "liveness", "status": "fail", "summary": "connection refused"}],
            "log_line": "RuntimeError: CUDA error: an illegal memory access was encountered",
            "log_pattern": "cuda_error",
            "metrics": {"vllm:num_requests_running": 0},
            "action": {"name": "restart", "outcome": "ok", "reason": "restarted"},
            "outcome": "recovered",
            "runbook": "Check `docker logs vllm-0`; if it repeats, page the model owner.",
            "runbook_url": "https://runbooks.example/vllm#service_down",
            "previous_severity": "P1",
        },
        grouped=({"kind": "not_ready", "severity": "P1", "summary": "/v1/models failed"},),
        status_url="http://127.0.0.1:9321/",
    )


def validate_template(text: str) -> list[str]:
    """Errors of a template, for `vllm-watchdog check`: syntax errors (with line), undefined names and
    sandbox violations found by rendering it against a sample notification. Empty list = fine."""
    try:
        tmpl = MessageTemplate(text)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: syntax error: {exc.message}"]
    except TemplateError as exc:
        return [f"template error: {exc}"]
    n = _sample_notification()
    try:
        out = tmpl.render(n, render(n))
    except SecurityError as exc:
        return [f"not allowed in the sandbox: {exc}"]
    except TemplateError as exc:
        names = ", ".join(sorted(template_context(n, render(n))))
        return [f"render error: {exc} (names available: {names})"]
    except Exception as exc:  # a template can raise anything (e.g. ZeroDivisionError from {{ 1/0 }})
        return [f"render error: {type(exc).__name__}: {exc}"]
    if not out.strip():
        return ["template renders to empty text"]
    return []


def compile_template(cfg: ReceiverBase) -> MessageTemplate | None:
    """The receiver's compiled template, or None when it has none."""
    return MessageTemplate(cfg.template) if cfg.template is not None else None


@dataclass(frozen=True, slots=True)
class Message:
    """What a notifier sends: the default content, and the text (template output or default), capped."""

    rendered: Rendered
    text: str
    template_error: str | None = None


def build_message(n: Notification, template: MessageTemplate | None = None, max_bytes: int | None = None) -> Message:
    """Render `n`; with a template, its output is the text. A template that fails at send time does not
    lose the message: the default text goes out with a note saying the template failed."""
    rendered = render(n)
    if template is None:
        return Message(rendered, rendered.text(max_bytes))
    try:
        text = template.render(n, rendered)
    except Exception as exc:
        err = f"{type(exc).__name__}: {fmt_value(str(exc), 300)}"
        note = f"\n\n(receiver template failed: {err}; default text sent)"
        return Message(rendered, cap_bytes(rendered.text() + note, max_bytes), err)
    return Message(rendered, cap_bytes(text, max_bytes))


__all__ = [
    "Message",
    "MessageTemplate",
    "ReceiverBase",
    "Rendered",
    "Section",
    "build_message",
    "cap_bytes",
    "cap_chars",
    "compile_template",
    "fmt_value",
    "render",
    "template_context",
    "title_line",
    "validate_template",
]
