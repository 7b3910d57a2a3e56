"""Regenerate the data and every demo bundle from scratch (``make models``).

    python -m medgate.training.make_models [--out models] [--work runs/make_models] [--fast]

Steps: phantom train/val/test folders -> cxr_classifier -> cxr_lung_heart_seg -> study_triage
(trained on the imaging bundles' outputs on the validation split) -> held-out evaluation of each
on the test split, recorded in the bundle's metadata with how to regenerate that split, and a
model card in ``docs/README.md``. Seeded throughout: the same code gives the same data; the
weights are reproducible up to floating-point non-determinism of the CPU kernels.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from medgate.datasets.folder import read_labeled_folder, write_phantom_folder
from medgate.models.bundle import Bundle
from medgate.models.predictor import load_predictor
from medgate.training.config import parse_train_config
from medgate.training.ct_nodule import make_ct_nodule_bundle
from medgate.training.evaluate import evaluate_bundle, model_card, run_predictor
from medgate.training.export import update_metadata
from medgate.training.image_trainer import PHANTOM_SOURCE, train_image_model
from medgate.training.triage_trainer import evaluate_triage, train_triage

log = logging.getLogger(__name__)

FULL = {"train": 2000, "val": 300, "test": 300, "cls_epochs": 12, "seg_epochs": 10}
FAST = {"train": 48, "val": 24, "test": 24, "cls_epochs": 1, "seg_epochs": 1}
HELD_OUT = {"generator": "medgate.datasets.cxr_phantom", "split": "test", "base": 0}


def _record(bundle: Bundle, report: dict[str, Any], count: int, summary: dict[str, Any]) -> Bundle:
    """Write held-out metrics, the regeneration recipe and the model card into the bundle."""
    metrics = dict(bundle.spec.metrics)
    metrics["held_out"] = {"studies": report["studies"], "metrics": report["metrics"]}
    bundle = update_metadata(
        bundle.path,
        eval_metrics=summary,
        medgate={"metrics": metrics, "evaluation": {**HELD_OUT, "count": count}},
    )
    docs = bundle.path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "README.md").write_text(model_card(bundle, report), encoding="utf-8")
    return bundle


def make_models(
    out: Path, work: Path, fast: bool = False, progress: bool = True
) -> dict[str, Bundle]:
    """Build all demo bundles into ``out``; returns them by name."""
    sizes = FAST if fast else FULL
    started = time.monotonic()
    data = work / "data"
    folders = {}
    for split in ("train", "val", "test"):
        folder = data / split
        if folder.exists():
            shutil.rmtree(folder)
        write_phantom_folder(folder, split, sizes[split], progress=progress)
        folders[split] = folder
    common = {
        "version": "1.0.0",
        "data": {**{k: str(v) for k, v in folders.items()}, "source": PHANTOM_SOURCE},
        "threads": 1,
        "resume": False,
        "size": 128,
        "batch_size": 32,
    }

    def train_and_record(
        name: str, task: str, preset: str, description: str, epochs: int, lr: float, net: str
    ) -> tuple[Bundle, dict[str, Any]]:
        """Train one image bundle on the phantoms and evaluate it on the held-out split."""
        config = {
            **common,
            "task": task,
            "preset": preset,
            "name": name,
            "description": description,
            "out": str(out / name),
            "run_dir": str(work / "runs" / name),
            "epochs": epochs,
            "lr": lr,
            "network": {"kind": net},
        }
        bundle = train_image_model(parse_train_config(config), progress=progress)
        return bundle, evaluate_bundle(bundle, folders["test"], work / "eval" / name)

    classifier, report = train_and_record(
        "cxr_classifier",
        "classification",
        "cxr_findings",
        "Multi-label chest radiograph classifier: nodule/mass, pleural effusion, pneumothorax, "
        "cardiomegaly",
        sizes["cls_epochs"],
        3e-3,
        "map_classifier",
    )
    classifier = _record(
        classifier,
        report,
        sizes["test"],
        {"mean_auc": report["metrics"]["mean_auc"], "min_auc": report["metrics"]["min_auc"]},
    )
    segmenter, report = train_and_record(
        "cxr_lung_heart_seg",
        "segmentation",
        "cxr_lung_heart",
        "Lung field and heart segmentation of chest radiographs with the cardiothoracic ratio",
        sizes["seg_epochs"],
        5e-3,
        "unet",
    )
    m = report["metrics"]
    segmenter = _record(
        segmenter,
        report,
        sizes["test"],
        {"mean_dice": m["mean_dice"], "ctr_mae": m["cardiothoracic_ratio"]["mae"]},
    )

    predictors = [load_predictor(classifier), load_predictor(segmenter)]

    def upstream(split: str) -> tuple[list, list]:
        studies = read_labeled_folder(folders[split])
        per_model = [run_predictor(p, studies) for p in predictors]
        return [list(r) for r in zip(*per_model, strict=True)], studies

    val_results, val_studies = upstream("val")
    triage_bundle = train_triage(
        out / "study_triage",
        val_results,
        val_studies,
        upstream={b.name: b.device_uid for b in (classifier, segmenter)},
    )
    test_results, test_studies = upstream("test")
    tri = evaluate_triage(triage_bundle, test_results, test_studies)
    triage_bundle = _record(
        triage_bundle,
        {"studies": tri["n"], "metrics": tri},
        sizes["test"],
        {"accuracy": tri["accuracy"], "critical_sensitivity": tri["sensitivity"]["critical"]},
    )
    ct = make_ct_nodule_bundle(out, work / "ct", fast=fast, progress=progress)
    made = (classifier, segmenter, triage_bundle, ct)
    elapsed = time.monotonic() - started
    summary = {b.name: b.spec.metrics.get("held_out", {}).get("metrics", {}) for b in made}
    (work / "summary.json").write_text(json.dumps({"seconds": elapsed, **summary}, indent=2))
    log.info("made %d bundles in %.0f s", len(made), elapsed)
    return {b.name: b for b in made}


def main(
    out: Annotated[Path, typer.Option(help="where the bundles go")] = Path("models"),
    work: Annotated[Path, typer.Option(help="data, runs and evaluation")] = Path(
        "runs/make_models"
    ),
    fast: Annotated[bool, typer.Option(help="tiny data, one epoch (smoke test)")] = False,
) -> None:
    """Regenerate the phantom data and every demo bundle from scratch."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    bundles = make_models(out, work, fast)
    for name, bundle in bundles.items():
        held = bundle.spec.metrics.get("held_out", {}).get("metrics", {})
        typer.echo(f"{name}: {bundle.path} device_uid={bundle.device_uid}")
        typer.echo(json.dumps(held, indent=1)[:2000])


if __name__ == "__main__":
    typer.run(main)
