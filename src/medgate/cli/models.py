"""Sub-commands of ``medgate`` owned by this package: ``medgate models list|show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medgate.cli.common import ConfigOption, fail, settings_or_exit

models_app = typer.Typer(help="Model bundles: list and inspect.", no_args_is_help=True)

PathOption = Annotated[
    Path | None, typer.Option("--path", help="bundle folder (default: models.path from config)")
]


def _models_path(config: Path | None, path: Path | None) -> Path:
    return path if path is not None else settings_or_exit(config).models.path


@models_app.command("list")
def list_models(
    config: ConfigOption = None,
    path: PathOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the bundles under models.path, and the ones skipped with the reason."""
    from medgate.models.registry import discover_bundles

    root = _models_path(config, path)
    bundles, problems = discover_bundles(root)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "bundles": [b.summary() for b in bundles],
                    "problems": [{"path": str(p.path), "reason": p.reason} for p in problems],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    console = Console()
    table = Table(title=f"bundles in {root}")
    for column in ("name", "version", "task", "outputs", "backends", "device UID", "note"):
        table.add_column(column)
    for bundle in bundles:
        outputs = [lab.name for lab in bundle.spec.labels] + [
            f"{m.name} [{m.unit.value}]" for m in bundle.spec.measurements
        ]
        table.add_row(
            bundle.name,
            bundle.version,
            bundle.task,
            ", ".join(outputs),
            ", ".join(bundle.model_files),
            bundle.device_uid,
            "DEMO weights, not for clinical use" if bundle.demo else "",
        )
    console.print(table)
    for problem in problems:
        console.print(f"[yellow]skipped[/] {problem.path}: {problem.reason}", highlight=False)
    if not bundles and problems:
        raise typer.Exit(1)


@models_app.command("show")
def show_model(
    name: Annotated[str, typer.Argument(help="bundle name")],
    config: ConfigOption = None,
    path: PathOption = None,
) -> None:
    """Print one bundle's summary (labels, codes, thresholds, metrics) as JSON."""
    from medgate.models.registry import get_bundle

    try:
        bundle = get_bundle(_models_path(config, path), name)
    except KeyError as exc:
        fail(str(exc.args[0]))
    summary = bundle.summary()
    summary["labels"] = [label.model_dump(mode="json") for label in bundle.spec.labels]
    summary["measurements"] = [m.model_dump(mode="json") for m in bundle.spec.measurements]
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
    app.add_typer(models_app, name="models")
