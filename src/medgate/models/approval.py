"""Which bundles may run their own configuration: the operator's approval by content hash.

A MONAI bundle's ``configs/inference.json`` is a program: ``$`` expressions are evaluated and
``_target_`` names any importable callable. The gateway runs it only for a bundle the operator
approved, by name and by the sha256 of everything that decides what runs (every file under
``configs/`` and ``models/``): ``models.trusted = ["<name>@<sha256>"]``. A changed weight or
config file changes the hash, and the bundle is refused until it is approved again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medgate.core.checksums import sha256_file

INFERENCE_CONFIGS = (
    Path("configs") / "inference.json",
    Path("configs") / "inference.yaml",
    Path("configs") / "inference.yml",
)
HASHED_FOLDERS = ("configs", "models")

Approval = Literal["not-needed", "approved", "needs-approval", "hash-mismatch"]


def inference_config(path: Path) -> Path | None:
    """The bundle's MONAI inference config, if it has one (JSON first, then YAML)."""
    for rel in INFERENCE_CONFIGS:
        if (path / rel).is_file():
            return path / rel
    return None


def bundle_hash(path: Path) -> str:
    """sha256 over the relative path and sha256 of every file in ``configs/`` and ``models/``
    (sorted), so a renamed, added or changed file gives another hash."""
    lines = []
    for folder in HASHED_FOLDERS:
        base = path / folder
        if not base.is_dir():
            continue
        for file in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix()
            if "__pycache__" in rel:
                continue
            lines.append(f"{rel}\0{sha256_file(file)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def trust_entry(name: str, digest: str) -> str:
    """The ``models.trusted`` entry that approves this bundle's current files."""
    return f"{name}@{digest}"


@dataclass(frozen=True)
class Decision:
    """The approval state of one bundle, with the entry that would approve it as it is now."""

    state: Approval
    entry: str
    approved_hashes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.state in ("not-needed", "approved")

    def reason(self) -> str:
        """One line for ``medgate models list``, ``/readyz`` and the log."""
        if self.state == "needs-approval":
            return (
                f'needs approval: its inference config runs code; add "{self.entry}" to '
                "models.trusted (or MEDGATE_MODELS__TRUSTED) after checking it with "
                "`medgate models check`"
            )
        if self.state == "hash-mismatch":
            approved = ", ".join(h[:12] for h in self.approved_hashes)
            return (
                f"refused: its files changed since approval (approved {approved}..., now "
                f'{self.entry.rsplit("@", 1)[1][:12]}...); re-approve with "{self.entry}"'
            )
        return self.state


def decide(name: str, path: Path, trusted: Iterable[str]) -> Decision:
    """Approval of the bundle ``name`` at ``path`` against the ``models.trusted`` entries."""
    if inference_config(path) is None:
        return Decision("not-needed", "")
    digest = bundle_hash(path)
    entry = trust_entry(name, digest)
    approved = tuple(
        item.rsplit("@", 1)[1].strip().lower()
        for item in trusted
        if "@" in item and item.rsplit("@", 1)[0].strip() == name
    )
    if digest in approved:
        return Decision("approved", entry, approved)
    if approved:
        return Decision("hash-mismatch", entry, approved)
    return Decision("needs-approval", entry)


__all__ = [
    "INFERENCE_CONFIGS",
    "Decision",
    "bundle_hash",
    "decide",
    "inference_config",
    "trust_entry",
]
