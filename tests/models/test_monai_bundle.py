"""A zoo-shaped MONAI bundle run the gateway's way (in memory, split in three steps) against
``monai.bundle run`` on the same CT series from disk, and the approval that gates it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from tests.support.monai_zoo_bundles import (
    CLS_CHANNELS,
    read_saved_mask,
    run_with_monai,
    write_classification_bundle,
    write_segmentation_bundle,
)

from medgate.datasets.ct_phantom import generate_ct_phantom, write_ct_series
from medgate.models.approval import bundle_hash, decide, trust_entry
from medgate.models.bundle import Bundle, BundleError
from medgate.models.monai_bundle import MonaiBundleRunner
from medgate.models.predictor import open_predictor
from medgate.models.registry import discover_bundles
from medgate.models.series_reader import series_metatensor


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    series = root / "series"
    write_ct_series(generate_ct_phantom(3), series)
    (series / "mask.npz").unlink()  # the phantom's truth; not a DICOM file
    bundles = root / "bundles"
    return {
        "series": series,
        "bundles": bundles,
        "seg": write_segmentation_bundle(bundles),
        "cls": write_classification_bundle(bundles),
        "out": root / "monai-out",
    }


def series_datasets(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def approved(path: Path) -> Bundle:
    bundles, problems = discover_bundles(path.parent, [trust_entry(path.name, bundle_hash(path))])
    by_name = {b.name: b for b in bundles}
    assert path.name in by_name, problems
    return by_name[path.name]


def test_series_reader_matches_monai_pydicom_reader(zoo: dict[str, Path]) -> None:
    from monai.transforms import LoadImage

    image, geometry = series_metatensor(series_datasets(zoo["series"]))
    reference = LoadImage(reader="PydicomReader")(str(zoo["series"]))
    assert tuple(image.shape) == tuple(reference.shape) == geometry.shape[::-1]
    np.testing.assert_array_equal(image.numpy(), reference.numpy())
    np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy(), atol=1e-5)


def test_segmentation_bundle_matches_monai_bundle_run(zoo: dict[str, Path]) -> None:
    """The gateway's three steps (preprocess / batched infer / postprocess with Invertd) give the
    mask that ``monai.bundle run`` writes for the same series: Dice >= 0.99."""
    run_with_monai(zoo["seg"], zoo["series"], zoo["out"])
    reference = read_saved_mask(zoo["out"] / "series_seg.nii.gz")

    predictor = open_predictor(approved(zoo["seg"]))
    datasets = series_datasets(zoo["series"])
    x = predictor.preprocess(datasets)
    assert x.shape[0] == 1 and x.shape[1:] != reference.shape  # resampled to 1.5 x 1.5 x 2 mm
    result = predictor.postprocess(predictor.infer(np.stack([x, x]))[1], datasets)
    mask = result.segmentation.masks["volume"]
    assert mask.shape == reference.shape
    assert reference.sum() > 10_000, "the reference mask should cover the phantom's body"
    assert dice(mask, reference) >= 0.99
    assert [(s.number, s.label) for s in result.segmentation.segments] == [(1, "soft tissue")]


def test_classification_bundle_matches_monai_bundle_run(zoo: dict[str, Path]) -> None:
    """Probabilities within 1e-4 of ``monai.bundle run``; no medgate keys, so scores only."""
    output = run_with_monai(zoo["cls"], zoo["series"], zoo["out"] / "cls")
    reference = np.asarray(output[0]["pred"]).reshape(-1)
    result = open_predictor(approved(zoo["cls"])).predict(series_datasets(zoo["series"]))
    got = np.array([result.scores[name] for name in CLS_CHANNELS.values()])
    np.testing.assert_allclose(got, reference, atol=1e-4)
    assert got.min() > 0.05 and got.max() < 0.95  # the window decides; not saturated
    assert result.findings == []  # no thresholds from the bundle author: no present/absent


def test_classification_with_medgate_thresholds_calls_findings(
    zoo: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(zoo["cls"], tmp_path / "zoo_ct_cls")
    meta_path = folder / "configs" / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    code = {"value": "D1", "scheme": "99TEST", "meaning": "dense"}
    metadata["medgate"] = {
        "task": "classification",
        "labels": [
            {"name": "dense", "index": 0, "code": code, "threshold": 0.1},
            {"name": "bright", "index": 1, "code": {**code, "value": "B1"}, "threshold": 0.9},
        ],
    }
    meta_path.write_text(json.dumps(metadata))
    result = open_predictor(approved(folder)).predict(series_datasets(zoo["series"]))
    calls = {f.label: (f.present, f.threshold) for f in result.findings}
    assert calls == {"dense": (True, 0.1), "bright": (False, 0.9)}


def test_unapproved_approved_and_changed_bundles(zoo: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(zoo["seg"], tmp_path / "zoo_ct_seg")
    entry = trust_entry(folder.name, bundle_hash(folder))

    bundles, problems = discover_bundles(tmp_path)
    assert bundles == []
    assert problems[0].trust_entry == entry and "needs approval" in problems[0].reason

    bundles, problems = discover_bundles(tmp_path, [entry])
    assert [b.name for b in bundles] == ["zoo_ct_seg"] and problems == []
    bundle = bundles[0]
    assert bundle.approval is not None and bundle.approval.state == "approved"

    weights = folder / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    bundles, problems = discover_bundles(tmp_path, [entry])
    assert bundles == []
    assert "refused" in problems[0].reason and problems[0].trust_entry != entry
    assert decide(folder.name, folder, [entry]).state == "hash-mismatch"
    # approved at discovery, changed before the replica loads it: the runner refuses too
    with pytest.raises(BundleError, match="changed since approval"):
        open_predictor(bundle)


def test_unapproved_bundle_config_is_never_parsed(tmp_path: Path) -> None:
    """Loading without approval fails before ConfigParser runs a single expression."""
    folder = write_segmentation_bundle(tmp_path)
    marker = tmp_path / "executed"
    config_path = folder / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["imports"].append(f"$open({str(marker)!r}, 'w').close()")
    config_path.write_text(json.dumps(config))
    bundle = Bundle.load(folder)
    with pytest.raises(BundleError, match="not approved"):
        open_predictor(bundle)
    assert not marker.exists()


def test_runner_uses_onnx_export_when_present(zoo: dict[str, Path], tmp_path: Path) -> None:
    from medgate.models.bundle_export import export_onnx

    folder = shutil.copytree(zoo["seg"], tmp_path / "zoo_ct_seg")
    report = export_onnx(folder, series=series_datasets(zoo["series"]))
    assert report.max_abs_difference < 1e-4
    onnx_runner = MonaiBundleRunner(folder)
    torch_runner = MonaiBundleRunner(folder, prefer_onnx=False)
    assert (onnx_runner.backend, torch_runner.backend) == ("onnx", "torch")
    image, _ = series_metatensor(series_datasets(zoo["series"]))
    assert dice(onnx_runner.run_image(image), torch_runner.run_image(image)) >= 0.999


def test_a_config_without_preprocessing_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_segmentation_bundle(tmp_path)
    config_path = folder / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    del config["preprocessing"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match="has no preprocessing"):
        MonaiBundleRunner(folder)


def test_yaml_inference_config_runs_like_json(zoo: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    folder = shutil.copytree(zoo["cls"], tmp_path / "zoo_ct_cls")
    config = folder / "configs" / "inference.json"
    (folder / "configs" / "inference.yaml").write_text(
        yaml.safe_dump(json.loads(config.read_text()))
    )
    config.unlink()
    datasets = series_datasets(zoo["series"])
    from_yaml = open_predictor(approved(folder)).predict(datasets)
    from_json = open_predictor(approved(zoo["cls"])).predict(datasets)
    assert from_yaml.scores == pytest.approx(from_json.scores, abs=1e-6)
