"""Training checkpoints written atomically, shared by every trainer.

A checkpoint is what an interrupted run resumes from, so a crash in the middle of writing one
must leave the previous one intact: the state goes to a temporary file that replaces the old
checkpoint in one rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of ``state`` to ``path``; the old file stays until the new one is whole."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
