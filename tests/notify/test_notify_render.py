"""Message rendering: 3 a.m. content, caps with notes, sandboxed templates and their validation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from watchdog.model import EventKind, Severity
from watchdog.notify.render import (
    MessageTemplate,
    build_message,
    cap_bytes,
    cap_chars,
    render,
    title_line,
    validate_template,
)

from .conftest import make_notification


def test_title_line_format():
    """The title is `[P0] target: summary`, with the edge word for non-open edges."""
    assert title_line(make_notification()) == "[P0] vllm-0: GET /health: connection refused"
    assert title_line(make_notification(EventKind.RESOLVED, Severity.P2)).startswith("[P2] RESOLVED vllm-0: ")
    assert title_line(make_notification(EventKind.REPEAT)) == "[P0] vllm-0: GET /health: connection refused"


def test_text_has_everything_on_call_needs():
    """Evidence (probe, log line, metrics), action and outcome, runbook step, grouped incidents, status link."""
    text = render(make_notification()).text()
    for needle in (
        "Opened: service_down on vllm-0 — P0 (critical)",
        "- probe liveness: fail — connection refused",
        "- log [gpu_oom]: torch.OutOfMemoryError: CUDA out of memory",
        "vllm:gpu_cache_usage_perc: 0.99",
        "- restart → ok (container restarted)",
        "Outcome: server answered /health after 41 s",
        "Next step\nLower --gpu-memory-utilization to 0.85 and restart.",
        "Runbook: https://runbooks.example/vllm#gpu_oom",
        "Also affected (1 grouped)\n- [P1] not_ready: /v1/models failed",
        "Status page\nhttp://127.0.0.1:9321/",
        "Labels: gpu=0",
    ):
        assert needle in text, needle


def test_resolved_text_says_how_long_and_no_action_needed():
    """A resolved notice gives the resolve time, the duration and says nothing needs doing."""
    text = render(make_notification(EventKind.RESOLVED, resolved_at=1_800_000_000.0 + 3725)).text()
    assert "after 1h02m" in text and "None: the condition has cleared." in text


def test_unknown_detail_keys_and_odd_values_render():
    """Unknown keys go under Other details; nested/None/bytes-like values never crash rendering."""
    n = make_notification(details={"weird": {"a": [1, None, 2.5]}, "none": None, "obj": object()})
    text = render(n).text()
    assert 'weird: {"a": [1, null, 2.5]}' in text and "none: null" in text


@given(st.text(max_size=3000), st.integers(min_value=0, max_value=4000))
def test_cap_bytes_never_exceeds_and_says_so(text, limit):
    """cap_bytes output fits the byte limit, is valid text, and notes the cut when it cut."""
    out = cap_bytes(text, limit)
    assert len(out.encode("utf-8")) <= limit
    if len(text.encode("utf-8")) > limit and limit >= 40:
        assert "(truncated " in out and out.endswith(" bytes)")
    if len(text.encode("utf-8")) <= limit:
        assert out == text


def test_cap_reports_dropped_amount():
    """The note states how many bytes/chars were dropped."""
    out = cap_bytes("a" * 1000, 100)
    kept = out.split("…")[0]
    assert out.endswith(f"(truncated {1000 - len(kept)} bytes)")
    assert cap_chars("b" * 5000, 3000).endswith("chars)") and len(cap_chars("b" * 5000, 3000)) <= 3000


def test_template_renders_with_notification_fields():
    """A receiver template sees the notification fields, title and default text."""
    t = MessageTemplate("{{ severity }}/{{ target }} {{ details.runbook }} | {{ title }}")
    msg = build_message(make_notification(), t)
    assert msg.text == (
        "P0/vllm-0 Lower --gpu-memory-utilization to 0.85 and restart. | [P0] vllm-0: GET /health: connection refused"
    )


def test_template_failure_at_send_falls_back_to_default_text():
    """A template that hits an undefined name at send time still sends the default text, with a note."""
    t = MessageTemplate("{{ details.runbook }}")
    msg = build_message(make_notification(details={}), t)
    assert msg.template_error and "receiver template failed" in msg.text and "What happened" in msg.text


def test_validate_template_reports_syntax_undefined_and_sandbox():
    """check-time validation reports syntax errors with lines, undefined names and sandbox escapes."""
    assert validate_template("{{ title }}\n{{ text }}") == []
    assert validate_template("ok\n{% if %}")[0].startswith("line 2: syntax error")
    assert "nosuchname" in validate_template("{{ nosuchname }}")[0]
    assert "sandbox" in validate_template("{{ ''.__class__.__mro__[1].__subclasses__() }}")[0]
    assert validate_template("   ") == ["template renders to empty text"]
