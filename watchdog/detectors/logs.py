"""Classify vLLM log lines with a pattern catalog (data: `watchdog/data/log_patterns.yaml`, overridable),
and turn each start-up/crash window into one Finding naming its root cause. Stage: detect.

The catalog holds regex *families* for every vLLM version of reference/vllm.md §3 (log strings change
between versions). Each entry names an incident kind, a severity, whether a restart helps, the remedy of
the §3.8 decision table, where it may match (`anchor: start`: where the emitting component's message or
an exception line starts, see `logshape`) and its root-cause `precedence`. vLLM's request/response
logging (`Received request …`, `Generated response …`) is never evidence, whatever the prompt quotes.
Speed: the (lower-case) keywords, compiled as one trie regex, are searched first in the lower-cased line;
only the rare line that contains a keyword is shaped and runs the entry regexes, in catalog order (first
match wins). Lines are classified on their first `MAX_CLASSIFY_CHARS` characters.

This module never does I/O except reading the catalog files at load time, never acts, and never
raises on a log line. A bad catalog file raises `ConfigError` with `Problem`s naming the file, the
entry id and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from watchdog.config.loader import problem_from_error
from watchdog.config.yamlsafe import parse_yaml, read_capped
from watchdog.detectors.logshape import ANSI, anchor_points, is_echo
from watchdog.errors import ConfigError, Problem
from watchdog.model import Finding, IncidentKind, JSONValue, LogLine, ProbeResult, Severity

MAX_CLASSIFY_CHARS = 4096
MAX_EVIDENCE_CHARS = 500
SHIPPED = "log_patterns.yaml"


class PatternSpec(BaseModel):
    """One catalog entry as written in YAML (see the header of `log_patterns.yaml`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1, description="Unique name of the pattern.")
    cls: str = Field(alias="class", min_length=1, description="Failure class; one finding per class.")
    kind: IncidentKind = Field(description="Incident kind opened by a match.")
    severity: Severity = Field(description="P0..P3.")
    restart_helps: bool = Field(description="Whether restarting with the same config can fix it.")
    regex: str = Field(min_length=1, description="Python regex searched in the line.")
    keywords: list[str] = Field(default_factory=list, description="Literal prefilter substrings "
                                "(case-insensitive); empty means the regex runs on every line.")
    ignore_case: bool = Field(False, description="Case-insensitive regex.")
    remedy: str = Field("", description="Recommended remedy (reference/vllm.md §3.8).")
    examples: list[str] = Field(default_factory=list, description="Lines that must match this entry.")
    enabled: bool = Field(True, description="false removes a shipped entry (in an override file).")
    anchor: Literal["any", "start"] = Field("any", description="start: the regex must match where the "
                                            "emitting component's message (or an exception line) starts; "
                                            "any: anywhere in the line.")
    precedence: int | None = Field(None, ge=0, description="Root-cause rank inside one crash/start-up "
                                   "window (lower wins; the others become its evidence). None: a "
                                   "standalone finding, never grouped.")


@dataclass(frozen=True, slots=True)
class LogPattern:
    """A compiled catalog entry."""

    id: str
    cls: str
    kind: IncidentKind
    severity: Severity
    restart_helps: bool
    regex: re.Pattern[str]
    keywords: tuple[str, ...]
    remedy: str
    examples: tuple[str, ...] = ()
    anchor: str = "any"
    precedence: int | None = None


@dataclass(frozen=True, slots=True)
class LogMatch:
    """A classified line: the entry that matched, the line (capped) and the named groups."""

    pattern: LogPattern
    line: str
    groups: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> IncidentKind:
        return self.pattern.kind

    @property
    def cls(self) -> str:
        return self.pattern.cls


def _cap(s: str, n: int = MAX_EVIDENCE_CHARS) -> str:
    return s if len(s) <= n else s[: n - 15] + "…[truncated]"


class LogCatalog:
    """An ordered, compiled set of patterns with a keyword prefilter."""

    def __init__(self, patterns: Sequence[LogPattern]) -> None:
        self.patterns: tuple[LogPattern, ...] = tuple(patterns)
        kws = sorted({k.lower() for p in self.patterns for k in p.keywords}, key=len, reverse=True)
        self._always = any(not p.keywords for p in self.patterns)
        # searched in the lower-cased line (re.IGNORECASE makes it about 10x slower), as a trie: one branch
        # per next character instead of one per keyword (about 2x faster than a flat alternation)
        self._prefilter: re.Pattern[str] | None = re.compile(_trie_pattern(kws)) if kws else None
        self._lower_kws: tuple[tuple[str, ...], ...] = tuple(
            tuple(k.lower() for k in p.keywords) for p in self.patterns
        )

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.patterns]

    def get(self, pattern_id: str) -> LogPattern | None:
        return next((p for p in self.patterns if p.id == pattern_id), None)

    @classmethod
    def load(cls, override_path: Path | None = None) -> LogCatalog:
        """The shipped catalog, with `override_path` (if given) replacing/extending entries by id."""
        shipped_text = resources.files("watchdog").joinpath("data", SHIPPED).read_text(encoding="utf-8")
        specs, lines = _read_specs(shipped_text, f"watchdog/data/{SHIPPED}")
        origin: dict[str, tuple[str, dict[str, int]]] = {
            s["id"]: (f"watchdog/data/{SHIPPED}", ln) for s, ln in zip(specs, lines, strict=True)
            if isinstance(s.get("id"), str)
        }
        merged: list[dict[str, Any]] = [dict(s) for s in specs]
        if override_path is not None:
            try:
                text = read_capped(override_path, what="log_patterns", fix="give a readable YAML file")
            except ConfigError as e:
                problem = e.problems[0]
                raise ConfigError([Problem(problem.file, None, "log_patterns", f"cannot read file: {problem.message}",
                                           problem.fix)]) from None
            ov_specs, ov_lines = _read_specs(text, str(override_path))
            for spec, ln in zip(ov_specs, ov_lines, strict=True):
                pid = spec.get("id")
                idx = next((i for i, s in enumerate(merged) if s.get("id") == pid), None)
                if idx is None:
                    merged.append(dict(spec))
                else:
                    merged[idx] = {**merged[idx], **spec}
                if isinstance(pid, str):
                    origin[pid] = (str(override_path), ln)
        return cls.from_specs(merged, origin)

    @classmethod
    def from_specs(
        cls, specs: Sequence[Mapping[str, Any]], origin: Mapping[str, tuple[str, Mapping[str, int]]] | None = None
    ) -> LogCatalog:
        """Validate and compile raw entries; every problem is collected before raising."""
        problems: list[Problem] = []
        compiled: list[LogPattern] = []
        seen: set[str] = set()
        origin = origin or {}
        for i, raw in enumerate(specs):
            pid = raw.get("id") if isinstance(raw.get("id"), str) else None
            file, lines = origin.get(pid or "", ("<catalog>", {}))
            label = f"patterns[{pid}]" if pid else f"patterns[{i}]"
            try:
                spec = PatternSpec.model_validate(raw)
            except ValidationError as e:
                for err in e.errors(include_input=False):  # the project's one converter: did-you-mean, bounds
                    prob = problem_from_error(err, file, None, raw, PatternSpec)
                    fld = prob.field if prob.field != "(top level)" else "entry"
                    problems.append(Problem(file, lines.get(fld, lines.get("", None)), f"{label}.{fld}",
                                            prob.message, prob.fix or _fix_for(fld)))
                continue
            if not spec.enabled:
                continue
            if spec.id in seen:
                problems.append(Problem(file, lines.get("id"), f"{label}.id", "duplicate id",
                                        "give each entry a unique id"))
                continue
            seen.add(spec.id)
            try:
                rx = re.compile(spec.regex, re.IGNORECASE if spec.ignore_case else 0)
            except re.error as e:
                problems.append(Problem(file, lines.get("regex"), f"{label}.regex", f"invalid regex: {e}",
                                        "a Python `re` pattern; quote it with single quotes in YAML"))
                continue
            bad_kw = [k for k in spec.keywords if not k.strip()]
            if bad_kw:
                problems.append(Problem(file, lines.get("keywords"), f"{label}.keywords", "empty keyword",
                                        "literal substrings that every matching line contains"))
                continue
            compiled.append(LogPattern(spec.id, spec.cls, spec.kind, spec.severity, spec.restart_helps, rx,
                                       tuple(spec.keywords), spec.remedy.strip(), tuple(spec.examples),
                                       spec.anchor, spec.precedence))
        catalog = cls(compiled)
        for p in catalog.patterns:  # every example must classify to its own entry (keywords included)
            file, lines = origin.get(p.id, ("<catalog>", {}))
            for ex in p.examples:
                m = catalog.classify(ex)
                if m is None or m.pattern.id != p.id:
                    got = "nothing" if m is None else f"entry {m.pattern.id!r}"
                    problems.append(Problem(file, lines.get("examples"), f"patterns[{p.id}].examples",
                                            f"example {_cap(ex, 80)!r} matches {got}",
                                            "fix the regex or keywords, or move the entry before the one "
                                            "that matches first"))
        if problems:
            raise ConfigError(problems)
        return catalog

    def classify(self, line: str) -> LogMatch | None:
        """The first entry matching `line`, or None; vLLM's request/response echoes match nothing.
        Never raises."""
        text = line if len(line) <= MAX_CLASSIFY_CHARS else line[:MAX_CLASSIFY_CHARS]
        low = text.lower()
        if not self._always and (self._prefilter is None or self._prefilter.search(low) is None):
            return None
        if "\x1b" in text:  # colour codes of a TTY-attached container
            text = ANSI.sub("", text)
        if is_echo(text):
            return None
        points: tuple[int, ...] | None = None
        for p, kws in zip(self.patterns, self._lower_kws, strict=True):
            if kws and not any(k in low for k in kws):
                continue
            if p.anchor == "start":
                if points is None:
                    points = anchor_points(text)
                m = next((x for x in (p.regex.match(text, pos) for pos in points) if x is not None), None)
            else:
                m = p.regex.search(text)
            if m is not None:
                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                return LogMatch(p, _cap(line), groups)
        return None


def _trie_pattern(words: Sequence[str]) -> str:
    """A regex matching any of `words` (literals), built as a trie; a word that is a prefix of another one
    ends the branch (containing the shorter word is enough)."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        if "" in node:
            return ""
        alts = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return build(trie)


def _fix_for(fld: str) -> str:
    return {
        "kind": "one of: " + ", ".join(k.value for k in IncidentKind),
        "severity": "one of P0, P1, P2, P3",
        "class": "a failure class name, e.g. engine_crash",
        "restart_helps": "true or false",
    }.get(fld, "see the header of watchdog/data/log_patterns.yaml")


def _read_specs(text: str, file: str) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
    """Entries of a catalog file and, for each, the 1-based line of each field ("" = the entry)."""
    data, root = parse_yaml(text, file, field="log_patterns")  # size, alias and duplicate-key limits
    if not isinstance(data, dict) or not isinstance(data.get("patterns"), list):
        raise ConfigError([Problem(file, 1, "patterns", "missing `patterns:` list",
                                   "a mapping with `patterns:` holding a list of entries")])
    extra = sorted(set(data) - {"version", "patterns"})
    if extra:
        raise ConfigError([Problem(file, 1, extra[0], "unknown top-level key", "only `version` and `patterns`")])
    line_maps: list[dict[str, int]] = []
    seq = None
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if isinstance(k, yaml.ScalarNode) and k.value == "patterns":
                seq = v
    items = seq.value if isinstance(seq, yaml.SequenceNode) else []
    specs: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for i, entry in enumerate(data["patterns"]):
        node = items[i] if i < len(items) else None
        lm: dict[str, int] = {}
        if node is not None:
            lm[""] = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                for k, _v in node.value:
                    if isinstance(k, yaml.ScalarNode):
                        lm[str(k.value)] = k.start_mark.line + 1
        if not isinstance(entry, dict):
            problems.append(Problem(file, lm.get(""), f"patterns[{i}]", "entry is not a mapping",
                                    "a mapping with id, class, kind, severity, restart_helps, regex"))
            continue
        specs.append(entry)
        line_maps.append(lm)
    if problems:
        raise ConfigError(problems)
    return specs, line_maps


@dataclass(slots=True)
class _Window:
    """One start-up or crash window: every grouped match within `window_s` of the first one."""

    wall: float | None
    mono: float
    root: LogMatch | None = None  # the root cause reported so far (None: nothing reported yet)
    matches: list[tuple[LogMatch, int, float | None]] = field(default_factory=list)  # (match, index, at)

    def holds(self, at: float | None, now: float, window_s: float) -> bool:
        if at is not None and self.wall is not None:
            return at - self.wall <= window_s
        return now - self.mono <= window_s


class LogDetector:
    """Turns classified log lines of one target into Findings. Standalone entries (no `precedence`): the
    FIRST line of each class opens one finding. Grouped entries: all matches within `window_s` of a
    window's first match form one start-up/crash window, and ONE finding names its root cause (lowest
    precedence); the other lines (e.g. the generic "startup failed" wrapper, the EngineDeadError that
    follows a CUDA OOM) ride along as `evidence["evidence_lines"]`, ordered by precedence. A better root
    arriving in a later read of the same window opens its finding then (the earlier one is not
    withdrawn). A class already reported is not reported again until `reset()` (the daemon calls it
    after a successful restart). Also a `Detector`: `observe(result)` reads `result.values["lines"]`."""

    name = "logs"
    MAX_EVIDENCE_LINES = 12

    def __init__(self, catalog: LogCatalog, target: str, window_s: float = 120.0) -> None:
        self.catalog = catalog
        self.target = target
        self.window_s = window_s
        self._seen: dict[str, LogMatch] = {}
        self._window: _Window | None = None

    def reset(self) -> None:
        """Forget which classes were reported (after a restart the same failure must be seen again)."""
        self._seen.clear()
        self._window = None

    @property
    def seen(self) -> Mapping[str, LogMatch]:
        return dict(self._seen)

    def observe(self, result: ProbeResult, now: float) -> list[Finding]:
        if result.target != self.target:
            return []
        raw = result.values.get("lines")
        if not isinstance(raw, list | tuple):
            return []
        lines = [ln if isinstance(ln, LogLine) else LogLine(str(ln)) for ln in raw]
        return self.observe_lines(lines, now)

    def observe_lines(self, lines: Sequence[LogLine], now: float) -> list[Finding]:
        out: list[Finding] = []
        touched: list[_Window] = []
        for idx, ln in enumerate(lines):
            m = self.catalog.classify(ln.text)
            if m is None:
                continue
            if m.pattern.precedence is None:
                if m.cls not in self._seen:
                    self._seen[m.cls] = m
                    out.append(self._finding(m, idx, ln.at, now, []))
                continue
            w = self._window
            if w is None or not w.holds(ln.at, now, self.window_s):
                w = self._window = _Window(ln.at, now)  # an older window was settled with its batch
            w.matches.append((m, idx, ln.at))
            if w not in touched:
                touched.append(w)
        for w in touched:
            out.extend(self._settle(w, now))
        return out

    def _settle(self, w: _Window, now: float) -> list[Finding]:
        """The window's finding, if its best match is a better root than what was reported for it."""
        if not w.matches:
            return []
        order = sorted(w.matches, key=lambda x: x[0].pattern.precedence or 0)  # stable: log order in a rank
        best, idx, at = order[0]
        if w.root is not None and (best.pattern.precedence or 0) >= (w.root.pattern.precedence or 0):
            return []
        if best.cls in self._seen:
            return []
        w.root = best
        self._seen[best.cls] = best
        riders = [x for x in order if x[0] is not best]
        return [self._finding(best, idx, at, now, riders)]

    def _finding(self, m: LogMatch, idx: int, at: float | None, now: float,
                 riders: Sequence[tuple[LogMatch, int, float | None]]) -> Finding:
        p = m.pattern
        evidence_lines: list[JSONValue] = [
            {"class": r.cls, "pattern": r.pattern.id, "line": r.line, "line_index": i}
            for r, i, _at in riders[: self.MAX_EVIDENCE_LINES]
        ]
        return Finding(
            target=self.target,
            kind=p.kind.value,
            severity=p.severity,
            summary=f"log: {p.cls} ({p.id}): {_cap(m.line.strip(), 160)}",
            active=True,
            evidence={
                "log_line": m.line,
                "pattern": p.id,
                "class": p.cls,
                "restart_helps": p.restart_helps,
                "groups": dict(m.groups),
                "line_at": at,
                "line_index": idx,
                "seen_at": now,
                "evidence_lines": evidence_lines,
                "evidence_lines_dropped": max(0, len(riders) - self.MAX_EVIDENCE_LINES),
            },
            source=self.name,
            remedy=p.remedy,
        )


__all__ = ["MAX_CLASSIFY_CHARS", "LogCatalog", "LogDetector", "LogMatch", "LogPattern", "PatternSpec"]
