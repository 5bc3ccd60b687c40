"""The tests tree itself: every test module has a basename of its own (pytest imports
them by basename, so two tiers with the same file name cannot run in one session, which
is how CI runs them: scripts/test.sh), and no test module imports another."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "qms_" not in str(p.relative_to(TESTS)))


def test_every_test_module_has_its_own_basename() -> None:
    names = Counter(p.name for p in _modules() if p.name != "conftest.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_no_test_module_imports_another_or_a_conftest() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [
                f"{path.relative_to(TESTS)}: {name}"
                for name in names
                if name.split(".")[0].startswith("test_") or name.split(".")[0] == "conftest"
            ]
    assert found == []
