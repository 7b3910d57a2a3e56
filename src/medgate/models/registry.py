"""The bundle registry: every bundle directory under ``models.path``, validated.

One broken bundle must not take the gateway down: it is reported with its reason and skipped,
and the others load. Bundles are found as the sub-directories holding ``configs/metadata.json``.
A bundle with its own MONAI inference config is listed only once ``models.trusted`` approves its
current files (models/approval.py); otherwise it is a problem that carries the entry to approve.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medgate.models.approval import decide
from medgate.models.bundle import METADATA_FILE, Bundle, BundleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleProblem:
    """A bundle directory that was skipped, and why."""

    path: Path
    reason: str
    trust_entry: str | None = None  # set when the bundle only waits for the operator's approval

    def __str__(self) -> str:
        return f"{self.path.name}: {self.reason}"


def discover_bundles(
    path: str | Path, trusted: Iterable[str] = ()
) -> tuple[list[Bundle], list[BundleProblem]]:
    """Load every bundle under ``path`` (sorted by name); invalid ones go to the problem list.

    ``trusted`` holds ``models.trusted``: a bundle with an inference config that it does not
    approve (never approved, or changed since) is a problem with the entry that would approve it.

    ``path`` may also be one bundle directory. A missing ``path`` is a problem, not an error.
    Two bundles with the same name: the first (by directory name) wins, the other is a problem.
    """
    root = Path(path)
    if not root.is_dir():
        return [], [BundleProblem(root, "models path does not exist or is not a directory")]
    if (root / METADATA_FILE).is_file():
        candidates = [root]
    else:
        candidates = sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
        )
    bundles: list[Bundle] = []
    problems: list[BundleProblem] = []
    seen: set[str] = set()
    for candidate in candidates:
        try:
            bundle = Bundle.load(candidate)
        except BundleError as exc:
            log.warning("skipping bundle %s: %s", candidate.name, exc)
            problems.append(BundleProblem(candidate, str(exc)))
            continue
        if bundle.name in seen:
            problems.append(BundleProblem(candidate, f"duplicate bundle name {bundle.name!r}"))
            continue
        bundle.approval = decide(bundle.name, candidate, trusted)
        if not bundle.approval.allowed:
            log.warning("not serving bundle %s: %s", bundle.name, bundle.approval.reason())
            problems.append(
                BundleProblem(candidate, bundle.approval.reason(), bundle.approval.entry)
            )
            continue
        seen.add(bundle.name)
        bundles.append(bundle)
    return bundles, problems


def get_bundle(path: str | Path, name: str, trusted: Iterable[str] = ()) -> Bundle:
    """The bundle called ``name`` under ``path``; ``KeyError`` lists the known names."""
    bundles, problems = discover_bundles(path, trusted)
    for bundle in bundles:
        if bundle.name == name:
            return bundle
    reasons = [f"{p.path.name}: {p.reason}" for p in problems if p.path.name == name]
    known = ", ".join(b.name for b in bundles) or "none"
    detail = f" ({reasons[0]})" if reasons else ""
    raise KeyError(f"no usable bundle {name!r}{detail}; available: {known}")
