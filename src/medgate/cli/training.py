"""Sub-commands of ``medgate`` owned by this package: train, evaluate, export, phantoms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medgate.cli.common import fail

TASKS_IMAGING = ("classification", "segmentation")


def train_from_config_dict(data: dict[str, Any], out: Path | None, progress: bool) -> Path:
    """Dispatch a training config by ``task``; returns the bundle directory written."""
    task = data.get("task")
    if out is not None:
        data = {**data, "out": str(out)}
    if task == "tabular":
        from medgate.training import tabular  # owned by the decision-support engineer

        # The tabular trainer writes <out>/<name>/ (out is the models folder).
        target = Path(data.get("out") or "models")
        return Path(tabular.train_from_config(data, target))
    if task == "triage":
        return _train_triage(data)
    if task in TASKS_IMAGING:
        from medgate.training.config import parse_train_config
        from medgate.training.image_trainer import train_image_model

        return train_image_model(parse_train_config(data), progress=progress).path
    raise ValueError(
        f"unknown task {task!r}; use one of classification, segmentation, triage, tabular"
    )


def _train_triage(data: dict[str, Any]) -> Path:
    from medgate.datasets.folder import read_labeled_folder
    from medgate.models.predictor import load_predictor
    from medgate.training.evaluate import run_predictor
    from medgate.training.triage_trainer import train_triage

    try:
        upstream = [load_predictor(Path(p)) for p in data["bundles"]]
        folder = Path(data["data"]["train"])
        out = Path(data["out"])
    except KeyError as exc:
        raise ValueError(
            f"a triage config needs 'bundles', 'data.train' and 'out' ({exc})"
        ) from exc
    studies = read_labeled_folder(folder)
    per_model = [run_predictor(p, studies) for p in upstream]
    results = [list(r) for r in zip(*per_model, strict=True)]
    bundle = train_triage(
        out,
        results,
        studies,
        version=str(data.get("version", "1.0.0")),
        upstream={p.bundle.name: p.bundle.device_uid for p in upstream},
    )
    return bundle.path


def train(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG", help="TOML or JSON config")],
    out: Annotated[Path | None, typer.Option(help="bundle directory (overrides 'out')")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train a model from CONFIG and write its bundle (task: classification, segmentation,
    triage or tabular)."""
    from medgate.training.config import read_config_file

    try:
        data = read_config_file(config_file)
        path = train_from_config_dict(data, out, progress=not quiet)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"bundle written: {path}")


def evaluate(
    bundle: Annotated[Path, typer.Argument(help="bundle directory")],
    data: Annotated[Path, typer.Option("--data", help="labelled DICOM folder (labels.csv)")],
    out: Annotated[Path | None, typer.Option(help="report folder")] = None,
) -> None:
    """Evaluate BUNDLE on held-out data: metrics.json, ROC/calibration/confusion/Dice/error PNGs
    and a model card (MODEL_CARD.md)."""
    from medgate.models.bundle import BundleError
    from medgate.training.evaluate import evaluate_bundle

    target = out or Path("runs") / "evaluate" / bundle.name
    try:
        report = evaluate_bundle(bundle, data, target, progress=True)
    except (BundleError, ValueError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(report["metrics"], indent=2))
    typer.echo(f"report written to {target}")


def export_bundle(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG", help="the training config")],
    out: Annotated[Path | None, typer.Option(help="bundle directory (overrides 'out')")] = None,
) -> None:
    """Re-export the best checkpoint of a training run (run_dir/checkpoint.pt) as a bundle,
    without training further (ONNX with dynamic batch + TorchScript, parity-checked)."""
    from medgate.training.config import parse_train_config, read_config_file
    from medgate.training.image_trainer import CHECKPOINT, train_image_model

    try:
        data = read_config_file(config_file)
        if out is not None:
            data["out"] = str(out)
        cfg = parse_train_config(data)
        if not (Path(cfg.run_dir) / CHECKPOINT).is_file():
            fail(f"{cfg.run_dir}: no {CHECKPOINT}; train first")
        # Resuming a finished run trains no further epochs and exports the best state.
        cfg = cfg.model_copy(update={"resume": True})
        bundle = train_image_model(cfg, progress=False)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"bundle written: {bundle.path} (device UID {bundle.device_uid})")


def phantoms(
    out: Annotated[Path, typer.Argument(help="folder to write (images/, masks/, labels.csv)")],
    split: Annotated[str, typer.Option(help="train, val or test (disjoint seed ranges)")] = "test",
    count: Annotated[int, typer.Option(min=1, help="number of studies")] = 50,
    base: Annotated[int, typer.Option(min=0, help="offset into the split's seeds")] = 0,
) -> None:
    """Generate chest radiograph phantoms as DICOM (DX) with labels and lung/heart masks."""
    from medgate.datasets.folder import write_phantom_folder

    try:
        path = write_phantom_folder(out, split, count, base=base, progress=True)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"{count} studies written; labels in {path}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("export-bundle")(export_bundle)
    app.command("phantoms")(phantoms)
