"""The dependency rules of the package layout (DESIGN.md, "Package layout"), checked on the source.

Every ``import`` and ``from ... import`` of every module under src/medgate counts, at module level
or inside a function (a lazy import is still a dependency: ``models`` must run where Ray is not
installed), relative imports resolved. A rule names the packages it applies to and the module
prefixes they must not import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

BELOW_API = (
    "core",
    "store",
    "dicom",
    "models",
    "clinical",
    "pipeline",
    "reports",
    "delivery",
    "review",
    "trust",
    "training",
    "datasets",
)


@dataclass(frozen=True)
class Rule:
    """Modules of ``packages`` (medgate.<package>) must not import any of ``forbidden``."""

    name: str
    packages: tuple[str, ...]
    forbidden: tuple[str, ...]


def _medgate(*packages: str) -> tuple[str, ...]:
    return tuple(f"medgate.{package}" for package in packages)


RULES = (
    Rule("core imports nothing of medgate", ("core",), ("medgate",)),
    Rule(
        "dicom and store know nothing of inference, clinical rules or HTTP",
        ("dicom", "store"),
        (
            *_medgate("models", "clinical", "pipeline", "reports", "api", "serving"),
            *("fastapi", "starlette", "ray"),
        ),
    ),
    Rule(
        "models runs without Ray and never imports training",
        ("models",),
        ("medgate.serving", "medgate.training", "ray"),
    ),
    Rule(
        "clinical and reports are pure (no I/O, no Ray)",
        ("clinical", "reports"),
        (*_medgate("store", "dicom", "serving", "api", "pipeline"), "ray"),
    ),
    Rule("nothing below api imports it", BELOW_API, ("medgate.api",)),
    Rule("the command line sits on top", (*BELOW_API, "api", "serving"), ("medgate.cli",)),
)


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, src: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports, with its line: ``from a import b`` counts as ``a.b`` too
    (``b`` may be a module), relative imports made absolute."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return found


def violations(src: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    """One line per import that breaks a rule: ``module:line imports target (rule)``."""
    found = []
    for path in sorted((src / "medgate").rglob("*.py")):
        module = module_name(path, src)
        for rule in rules:
            own = [f"medgate.{package}" for package in rule.packages]
            if not any(module == p or module.startswith(p + ".") for p in own):
                continue
            for target, line in imports_of(path, src):
                if any(target == p or target.startswith(p + ".") for p in own):
                    continue  # a package may import itself
                if any(target == f or target.startswith(f + ".") for f in rule.forbidden):
                    found.append(f"{module}:{line} imports {target} ({rule.name})")
    return sorted(set(found))


#: Imports that break a rule today, each to be removed by the owner of the module; the test
#: fails on any other violation and on an entry here that no longer occurs.
KNOWN: frozenset[str] = frozenset()


def test_the_source_keeps_the_dependency_rules() -> None:
    found = set(violations(SRC))
    new = sorted(found - KNOWN)
    gone = sorted(KNOWN - found)
    assert not new, "imports against the layout's dependency rules:\n" + "\n".join(new)
    assert not gone, "fixed, take them off KNOWN:\n" + "\n".join(gone)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "medgate" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [root / "medgate", *(root / "medgate").rglob("*")]:
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("")
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"core/x.py": "from medgate.store import db\n"}, "medgate.core.x:1 imports medgate.store"),
        (
            {"store/x.py": "def f():\n    from medgate.models import bundle\n"},
            "medgate.store.x:2 imports medgate.models",
        ),
        ({"models/x.py": "import ray.serve\n"}, "medgate.models.x:1 imports ray.serve"),
        (
            {"models/x.py": "from ..training import export\n"},
            "medgate.models.x:1 imports medgate.training",
        ),
        (
            {"reports/sub/x.py": "from ...store.db import Index\n"},
            "medgate.reports.sub.x:1 imports medgate.store",
        ),
        (
            {"clinical/__init__.py": "from medgate import api\n"},
            "medgate.clinical:1 imports medgate.api (",
        ),
        ({"trust/x.py": "import medgate.api.app\n"}, "medgate.trust.x:1 imports medgate.api.app"),
        ({"api/x.py": "from medgate.cli import gateway\n"}, "medgate.api.x:1 imports medgate.cli"),
    ],
)
def test_a_broken_rule_is_found(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = violations(_tree(tmp_path, files))
    assert any(line.startswith(expected) for line in found), found


def test_allowed_imports_are_not_reported(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "core/a.py": "from medgate.core import b\nfrom . import b as c\n",
            "core/b.py": "import hashlib\n",
            "pipeline/w.py": "from medgate.serving import x\nfrom medgate.store import db\n",
            "reports/r.py": "from medgate.clinical import rules\nfrom medgate.core import uids\n",
            "serving/x.py": "from medgate.api import app\n",
            "cli/c.py": "from medgate.api import app\nimport ray\n",
        },
    )
    assert violations(tree) == []
