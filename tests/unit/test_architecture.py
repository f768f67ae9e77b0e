"""The structure rules of ARCHITECTURE.md that import-linter cannot see: project modules are imported at
module level only (no import inside a function, no `except ImportError` around one), every module opens
with a docstring, no module is over 500 lines and no function over 80."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "watchdog"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _is_project(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "watchdog"
    return any(a.name.split(".")[0] == "watchdog" for a in node.names)


def _function_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and _is_project(node):
                    yield node.lineno, f"{fn.name}() imports {ast.unparse(node)}"


def _guarded_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if not catches & {"ImportError", "ModuleNotFoundError", "(ImportError, ModuleNotFoundError)"}:
            continue
        for stmt in node.body:
            for imp in ast.walk(stmt):
                if isinstance(imp, ast.Import | ast.ImportFrom) and _is_project(imp):
                    yield imp.lineno, f"`{ast.unparse(imp)}` inside try/except ImportError"


def _rel(p: Path) -> str:
    return str(p.relative_to(PKG.parent))


@pytest.mark.parametrize("path", modules(), ids=_rel)
def test_module_rules(path: Path) -> None:
    """Module-level project imports only, a docstring first, and the size limits."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    problems = [f"{_rel(path)}:{n}: {what}" for n, what in [*_function_imports(tree), *_guarded_imports(tree)]]
    if text.strip() and ast.get_docstring(tree) is None:
        problems.append(f"{_rel(path)}: no module docstring (say its stage and what it must never do)")
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        problems.append(f"{_rel(path)}: {lines} lines (max {MAX_MODULE_LINES})")
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.end_lineno is not None:
            n = fn.end_lineno - fn.lineno + 1
            if n > MAX_FUNCTION_LINES:
                problems.append(f"{_rel(path)}:{fn.lineno}: {fn.name}() is {n} lines (max {MAX_FUNCTION_LINES})")
    assert not problems, "\n".join(problems)


def test_the_rules_catch_what_they_forbid() -> None:
    """The checks above find a function-level project import and a guarded one."""
    tree = ast.parse("def f():\n    from watchdog.model import Severity\n"
                     "try:\n    import watchdog.daemon\nexcept ImportError:\n    pass\n")
    assert [n for n, _ in _function_imports(tree)] == [2]
    assert [n for n, _ in _guarded_imports(tree)] == [4]
    assert not list(_function_imports(ast.parse("def f():\n    import json\n")))
