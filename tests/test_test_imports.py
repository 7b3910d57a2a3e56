"""Test modules take shared helpers from the package tests/support/ and from nowhere else.

A helper imported from a conftest, from a sibling test module or through a bare name that only
resolves because pytest put a test folder on ``sys.path`` works under one import mode and breaks
(or is imported twice, as two different modules) under another. Every ``import`` and
``from ... import`` in every file under tests/ counts, at module level or inside a function.
Allowed: the standard library, installed distributions, ``medgate`` and ``tests.support``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SKIPPED_FOLDERS = {"artifacts", "__pycache__"}


@cache
def _installed_top_levels() -> frozenset[str]:
    """Top-level import names of every installed distribution (medgate's editable one included)."""
    return frozenset(importlib.metadata.packages_distributions())


@cache
def _test_folders() -> frozenset[str]:
    """Folders under tests/: as bare names they resolve only through pytest's sys.path edits."""
    return frozenset(path.name for path in TESTS.iterdir() if path.is_dir())


def _module_problem(module: str) -> str | None:
    """Why importing absolute ``module`` from a test file breaks the rule, or None if it is fine."""
    parts = module.split(".")
    if any(part == "conftest" for part in parts):
        return "imports from a conftest (helpers belong in tests/support/)"
    if any(part.startswith("test_") for part in parts):
        return "imports from a test module (helpers belong in tests/support/)"
    top = parts[0]
    if top in _test_folders():
        return f"bare name {top!r} is a test folder put on sys.path by pytest"
    if top == "tests":
        if parts[1:2] == ["support"]:
            return None
        return "imports from a test folder other than tests.support"
    if top == "medgate" or top in sys.stdlib_module_names or top in _installed_top_levels():
        return None
    return f"bare name {top!r} is neither installed, medgate nor tests.support"


def import_problems(source: str, filename: str = "<source>") -> list[str]:
    """Every import in ``source`` that does not come from stdlib, installed, medgate, tests.support.

    Also flags ``sys.path`` edits, the other way a test folder's module becomes importable.
    """
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                dots = "." * node.level
                problems.append(
                    f"{filename}:{node.lineno}: relative import from {dots}{node.module or ''} "
                    "(import helpers from tests.support)"
                )
                continue
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            problems.append(f"{filename}:{node.lineno}: touches sys.path")
            continue
        else:
            continue
        for module in modules:
            problem = _module_problem(module)
            if problem is not None:
                problems.append(f"{filename}:{node.lineno}: {module}: {problem}")
    return problems


def _test_files() -> list[Path]:
    return sorted(
        path
        for path in TESTS.rglob("*.py")
        if not SKIPPED_FOLDERS.intersection(path.relative_to(TESTS).parts)
    )


def test_every_test_file_imports_helpers_from_tests_support() -> None:
    problems = [
        problem
        for path in _test_files()
        for problem in import_problems(path.read_text(), str(path.relative_to(TESTS.parent)))
    ]
    assert not problems, "\n".join(problems)


def test_the_walk_sees_every_test_folder() -> None:
    """The check above is only as good as the files it reads: it must read the known folders."""
    folders = {path.relative_to(TESTS).parts[0] for path in _test_files() if path.parent != TESTS}
    assert {"support", "trust", "review", "delivery", "referrals", "deploy"} <= folders


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .conftest import Gateway\n", "relative import from .conftest"),
        ("from tests.referrals.conftest import SITE_A\n", "imports from a conftest"),
        ("import conftest\n", "imports from a conftest"),
        ("from test_deidentify import PHI_KEYWORDS\n", "imports from a test module"),
        ("from tests.trust.test_tls import x\n", "imports from a test module"),
        ("from faults_helpers import sop_uid\n", "bare name 'faults_helpers'"),
        ("def f():\n    import trust_data\n", "bare name 'trust_data'"),
        ("from tests.delivery.his_listener import MllpHis\n", "other than tests.support"),
        ("from dicom.helpers import storescu\n", "bare name 'dicom' is a test folder"),
        ("import sys\nsys.path.insert(0, 'tests/trust')\n", "touches sys.path"),
    ],
)
def test_the_check_catches_a_violation(source: str, expected: str) -> None:
    problems = import_problems(source)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_check_passes_allowed_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "import json\n"
        "import pytest\n"
        "from pydicom.dataset import Dataset\n"
        "from medgate.core.config import Settings\n"
        "from tests.support.cds_data import profile\n"
    )
    assert import_problems(source) == []
