"""Sub-commands of ``medgate`` owned by this package: ``medgate models list|show|check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medgate.cli.common import ConfigOption, fail, settings_or_exit

models_app = typer.Typer(
    help="Model bundles: list, inspect, check before approving.", no_args_is_help=True
)

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
    """List the bundles under models.path, how each would be served on this machine, and the
    ones skipped with the reason (a bundle awaiting approval with the entry that approves it)."""
    from medgate.models.registry import discover_bundles
    from medgate.serving.bundles import is_image_model
    from medgate.serving.placement import local_resources, plan_placement

    settings = settings_or_exit(config)
    root = path if path is not None else settings.models.path
    bundles, problems = discover_bundles(root, settings.models.trusted)
    images = {b.name: b for b in bundles if is_image_model(settings, b)}
    placement = plan_placement(settings, images, *local_resources(settings))
    awaiting = [p for p in problems if p.trust_entry]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "bundles": [
                        {**b.summary(), "serving": placement.note(b.name) or None} for b in bundles
                    ],
                    "problems": [
                        {"path": str(p.path), "reason": p.reason, "trust_entry": p.trust_entry}
                        for p in problems
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    console = Console()
    table = Table(title=f"bundles in {root}")
    columns = ("name", "version", "task", "outputs", "backends", "device UID", "serving", "note")
    for column in columns:
        table.add_column(column, no_wrap=column == "name")  # a name is what one copies
    for bundle in bundles:
        outputs = [lab.name for lab in bundle.spec.labels] + [
            f"{m.name} [{m.unit.value}]" for m in bundle.spec.measurements
        ]
        notes = ["DEMO weights, not for clinical use"] if bundle.demo else []
        if bundle.inference_config is not None:
            notes.append("runs its MONAI inference config (approved)")
        table.add_row(
            bundle.name,
            bundle.version,
            bundle.task,
            ", ".join(outputs),
            ", ".join(bundle.model_files),
            bundle.device_uid,
            placement.note(bundle.name),
            "; ".join(notes),
        )
    console.print(table)
    for problem in problems:
        label = "needs approval" if problem.trust_entry else "skipped"
        console.print(
            f"[yellow]{label}[/] {escape(str(problem.path))}: {escape(problem.reason)}",
            highlight=False,
        )
    if awaiting:
        entries = ", ".join(f'"{p.trust_entry}"' for p in awaiting)
        console.print(
            "To approve, after `medgate models check NAME --series DIR`: add to the config\n"
            f"  [models]\n  trusted = [{escape(entries)}]\n"
            f"or set MEDGATE_MODELS__TRUSTED='[{escape(entries)}]'",
            highlight=False,
        )
    if not bundles and problems:
        raise typer.Exit(1)


@models_app.command("check")
def check_model(
    bundle: Annotated[str, typer.Argument(help="bundle name under models.path, or its folder")],
    series: Annotated[Path, typer.Option("--series", help="folder of one DICOM series")],
    config: ConfigOption = None,
    path: PathOption = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Run a MONAI bundle the MONAI way (its own loader, PyTorch) and the medgate way (the
    series in memory, split steps, ONNX where exported) on one series; print their agreement
    (Dice for a mask, max abs difference for scores). It runs the bundle's code: use it on a
    bundle you are vetting. Exit 1 when they disagree."""
    from medgate.models.bundle import BundleError
    from medgate.models.bundle_check import check_bundle

    folder = Path(bundle)
    if not (folder / "configs").is_dir():
        folder = _models_path(config, path) / bundle
    if not series.is_dir():
        fail(f"--series {series}: not a folder")
    try:
        report = check_bundle(folder, series, device)
    except (BundleError, OSError) as exc:
        fail(str(exc))
    console = Console()
    if report.dice is not None:
        voxels = report.foreground_voxels or (0, 0)
        console.print(
            f"{report.bundle} ({report.task}, medgate on {report.backend}): Dice "
            f"{report.dice:.4f}  foreground voxels MONAI {voxels[0]}, medgate {voxels[1]}",
            highlight=False,
        )
    else:
        console.print(
            f"{report.bundle} ({report.task}, medgate on {report.backend}): max abs difference "
            f"{report.max_abs_difference:.2e}",
            highlight=False,
        )
    verdict = "agree" if report.agrees else "DISAGREE"
    console.print(f'{verdict}; approve with models.trusted entry "{report.trust_entry}"')
    if not report.agrees:
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
        trusted = settings_or_exit(config).models.trusted
        bundle = get_bundle(_models_path(config, path), name, trusted)
    except KeyError as exc:
        fail(str(exc.args[0]))
    summary = bundle.summary()
    summary["labels"] = [label.model_dump(mode="json") for label in bundle.spec.labels]
    summary["measurements"] = [m.model_dump(mode="json") for m in bundle.spec.measurements]
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
    app.add_typer(models_app, name="models")
