"""docs/configuration.md is generated from the schema: every key has a description, and the file is fresh."""

from __future__ import annotations

from pathlib import Path

from watchdog.config.docs import generate, sections, undocumented
from watchdog.config.kinds import KIND_DOCS
from watchdog.model import IncidentKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_key_has_a_description() -> None:
    """No field of any schema section lacks a description (the reference would have an empty cell)."""
    assert undocumented() == []


def test_every_incident_kind_is_documented() -> None:
    """Each IncidentKind has a severity, a source and an operator action in watchdog/config/kinds.py."""
    missing = [k.value for k in IncidentKind if k not in KIND_DOCS]
    assert missing == []
    assert all(d.severity in ("P0", "P1", "P2", "P3") and d.source and d.action for d in KIND_DOCS.values())


def test_reference_lists_every_key_and_kind() -> None:
    """Each section has a table row per key, and each incident kind has a row."""
    text = generate()
    for sec in sections():
        for name, f in sec.model.model_fields.items():
            assert f"| `{f.alias or name}` |" in text, f"{sec.path}.{name}"
    for kind in IncidentKind:
        assert f"| `{kind.value}` | {KIND_DOCS[kind].severity} |" in text


def test_committed_reference_is_not_stale() -> None:
    """docs/configuration.md equals what `python -m watchdog.config.docs` prints (run `make docs`)."""
    assert DOC.read_text(encoding="utf-8") == generate(), "docs/configuration.md is stale: run `make docs`"
