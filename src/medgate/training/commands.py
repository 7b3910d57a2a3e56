"""Sub-commands of ``medgate`` owned by this package."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
