"""The committed demo bundles load, reproduce their recorded held-out metrics on the regenerated
held-out phantoms, and meet the targets (AUC >= 0.95; Dice >= 0.9; CTR error <= 0.03)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgate.datasets.folder import read_labeled_folder, write_phantom_folder
from medgate.models.bundle import Bundle
from medgate.models.findings import ModelResult
from medgate.models.predictor import load_predictor
from medgate.models.registry import discover_bundles
from medgate.training.evaluate import evaluate_bundle, run_predictor
from medgate.training.triage_trainer import evaluate_triage

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
NAMES = ("cxr_classifier", "cxr_lung_heart_seg", "study_triage")
TOL = 2e-3  # ONNX Runtime on another CPU may differ in the last bits


@pytest.fixture(scope="module")
def committed() -> dict[str, Bundle]:
    bundles, problems = discover_bundles(MODELS)
    by_name = {b.name: b for b in bundles}
    missing = [n for n in NAMES if n not in by_name]
    assert not missing, f"committed bundles missing: {missing}; problems: {problems}"
    return by_name


@pytest.fixture(scope="module")
def held_out(committed: dict[str, Bundle], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out phantoms the metrics were recorded on, regenerated from their seeds."""
    recipe = committed["cxr_classifier"].spec.evaluation
    assert recipe["generator"] == "medgate.datasets.cxr_phantom"
    for name in NAMES:
        assert committed[name].spec.evaluation == recipe
    folder = tmp_path_factory.mktemp("held_out")
    write_phantom_folder(folder, recipe["split"], int(recipe["count"]), base=int(recipe["base"]))
    return folder


@pytest.fixture(scope="module")
def upstream(committed: dict[str, Bundle], held_out: Path) -> dict[str, list[ModelResult]]:
    """Each imaging bundle's results on the held-out studies, computed once for the module."""
    studies = read_labeled_folder(held_out)
    return {
        name: run_predictor(load_predictor(committed[name]), studies)
        for name in ("cxr_classifier", "cxr_lung_heart_seg")
    }


def test_bundles_are_demo_and_self_describing(committed: dict[str, Bundle]) -> None:
    for name in NAMES:
        bundle = committed[name]
        assert bundle.demo and "not for clinical use" in (bundle.warning or "")
        assert bundle.spec.checksums and bundle.device_uid.startswith("2.25.")
        assert (bundle.path / "docs" / "README.md").is_file()
        size = sum(f.stat().st_size for f in bundle.path.rglob("*") if f.is_file())
        assert size < 8 * 1024 * 1024, f"{name} is {size} bytes"


def test_classifier_reproduces_recorded_metrics(
    committed: dict[str, Bundle], held_out: Path, upstream: dict[str, list[ModelResult]]
) -> None:
    bundle = committed["cxr_classifier"]
    recorded = bundle.spec.metrics["held_out"]["metrics"]
    report = evaluate_bundle(bundle, held_out, results=upstream[bundle.name])
    for label in ("nodule", "effusion", "pneumothorax", "cardiomegaly"):
        auc = report["metrics"][label]["auc"]
        assert auc == pytest.approx(recorded[label]["auc"], abs=TOL)
        assert auc >= 0.95, (label, auc)


def test_segmenter_reproduces_recorded_metrics(
    committed: dict[str, Bundle], held_out: Path, upstream: dict[str, list[ModelResult]]
) -> None:
    bundle = committed["cxr_lung_heart_seg"]
    recorded = bundle.spec.metrics["held_out"]["metrics"]
    metrics = evaluate_bundle(bundle, held_out, results=upstream[bundle.name])["metrics"]
    for key in ("dice_lung", "dice_heart"):
        assert metrics[key]["mean"] == pytest.approx(recorded[key]["mean"], abs=TOL)
        assert metrics[key]["mean"] >= 0.9
    ctr = metrics["cardiothoracic_ratio"]
    assert ctr["mae"] == pytest.approx(recorded["cardiothoracic_ratio"]["mae"], abs=TOL)
    assert ctr["mae"] <= 0.03


def test_triage_reproduces_recorded_metrics(
    committed: dict[str, Bundle], held_out: Path, upstream: dict[str, list[ModelResult]]
) -> None:
    bundle = committed["study_triage"]
    recorded = bundle.spec.metrics["held_out"]["metrics"]
    studies = read_labeled_folder(held_out)
    per_model = [upstream["cxr_classifier"], upstream["cxr_lung_heart_seg"]]
    results = [list(r) for r in zip(*per_model, strict=True)]
    metrics = evaluate_triage(bundle, results, studies)
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.01)
    assert metrics["sensitivity"]["critical"] >= 0.9
