"""Rewrite the module tables of docs/architecture.md from the modules' own docstrings.

Everything after the line ``One row per module; ...`` under "## Modules" is regenerated: one
section per package (its ``__init__`` docstring's first paragraph), one row per module (the first
paragraph of the module's docstring). tests/test_architecture_doc.py fails when a module has no
row, so run this after adding or moving a module: ``python scripts/architecture_table.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "medgate"
DOC = ROOT / "docs" / "architecture.md"
MARKER = "One row per module; the first sentence of each module's docstring."
#: The packages in the order of the data flow (DESIGN.md, "Package layout").
ORDER = [
    "core",
    "store",
    "dicom",
    "models",
    "clinical",
    "pipeline",
    "reports",
    "delivery",
    "review",
    "api",
    "serving",
    "trust",
    "training",
    "datasets",
    "cli",
]


def first_paragraph(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def tables() -> str:
    out: list[str] = []
    for package in ORDER:
        out += [f"\n### `{package}/`\n", first_paragraph(SRC / package / "__init__.py"), ""]
        out += ["| module | one job |", "| --- | --- |"]
        for path in sorted((SRC / package).rglob("*.py")):
            rel = path.relative_to(SRC)
            if path.name == "__init__.py" or "versions" in rel.parts or path.name == "env.py":
                continue
            out.append(f"| `{rel.as_posix()}` | {first_paragraph(path)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    text = DOC.read_text(encoding="utf-8")
    head, found, _ = text.partition(MARKER)
    if not found:
        raise SystemExit(f"{DOC} has no line {MARKER!r} to put the tables after")
    DOC.write_text(head + MARKER + "\n" + tables(), encoding="utf-8")


if __name__ == "__main__":
    main()
