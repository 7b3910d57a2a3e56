"""docs/architecture.md stays true: every module under src/medgate has its row, and no row names a
module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "medgate"
DOC = ROOT / "docs" / "architecture.md"
SKIPPED = ("__init__.py",)


def modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if (
            path.name in SKIPPED
            or "versions" in rel.parts
            or rel.as_posix().endswith("migrations/env.py")
        ):
            continue
        found.add(rel.as_posix())
    return found


def rows() -> set[str]:
    return set(re.findall(r"^\| `([a-z0-9_/]+\.py)` \|", DOC.read_text(), flags=re.MULTILINE))


def test_every_module_has_a_row() -> None:
    missing = modules() - rows()
    assert not missing, f"docs/architecture.md has no row for: {sorted(missing)}"


def test_no_row_names_a_module_that_is_gone() -> None:
    stale = rows() - modules()
    assert not stale, f"docs/architecture.md names modules that do not exist: {sorted(stale)}"
