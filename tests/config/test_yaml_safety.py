"""Hostile YAML is refused fast and clearly, in the config, policy and log-catalog files alike."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from watchdog.config import load_file, load_text
from watchdog.config.yamlsafe import MAX_BYTES, MAX_NODES, parse_yaml
from watchdog.detectors.logs import LogCatalog
from watchdog.errors import ConfigError
from watchdog.remediation.policy import load_policies

GOOD = "targets:\n  - name: vllm\n    base_url: http://127.0.0.1:8000\n    model: m\n"

# 9 levels of 9 aliases each: 9**9 ≈ 387 million nodes once expanded (PyYAML itself shares them).
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_text(text, file="w.yaml")
    return [str(p) for p in ei.value.problems]


def test_alias_bomb_is_refused_in_under_a_second() -> None:
    """A billion-laughs document is refused before anything walks it, in well under a second."""
    t0 = time.perf_counter()
    out = _problems(GOOD + BOMB)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    assert any(f"expands to more than {MAX_NODES} nodes through aliases" in o for o in out)


def test_a_few_aliases_are_still_fine() -> None:
    """Ordinary anchors (one shared block reused twice) keep working."""
    text = GOOD + "    probes:\n      liveness: &p {period_s: 5}\n      readiness: *p\n"
    cfg = load_text(text)
    assert cfg.targets[0].probes.readiness.period_s == 5


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    """A key given twice in one mapping is an error at its second line naming the first."""
    out = _problems(GOOD + "http:\n  port: 1\n  port: 2\n")
    assert out == ["w.yaml:7: port: duplicate key (first at line 6) (keep one of them: YAML would silently use "
                   "the last)"]


def test_large_file_is_refused_before_reading_it(tmp_path: Path) -> None:
    """A config file over 1 MiB is refused in under a second without being parsed."""
    p = tmp_path / "big.yaml"
    p.write_text(GOOD + "# " + "x" * (50 * 1024 * 1024) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as ei:
        load_file(p)
    assert time.perf_counter() - t0 < 1.0
    assert f"is larger than {MAX_BYTES} bytes" in str(ei.value)


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    """Thousands of nested lists give a ConfigError, never a RecursionError."""
    with pytest.raises(ConfigError, match=r"nested more than|not valid YAML"):
        parse_yaml("x: " + "[" * 3000 + "]" * 3000 + "\n", "w.yaml")


def test_policy_files_get_the_same_limits(tmp_path: Path) -> None:
    """Policy files are read through the same loader: duplicate keys and bombs are refused there too."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("policies:\n  - name: a\n    name: b\n    match: {kinds: [service_down]}\n"
                   "    steps: [{action: restart}]\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        load_policies([dup])
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB + "policies: []\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="through aliases"):
        load_policies([bomb])
    assert time.perf_counter() - t0 < 1.0


def test_log_catalog_gets_the_same_limits(tmp_path: Path) -> None:
    """A log-catalog override with a duplicate key or over 1 MiB is refused with its file name."""
    dup = tmp_path / "cat.yaml"
    dup.write_text("version: 1\nversion: 2\npatterns: []\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        LogCatalog.load(dup)
    big = tmp_path / "big.yaml"
    big.write_text("patterns: []\n#" + "x" * (2 * MAX_BYTES))
    with pytest.raises(ConfigError, match="larger than"):
        LogCatalog.load(big)
