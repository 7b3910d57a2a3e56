"""The committed ct_nodule_seg bundle: listed, parity of its exports, held-out figures reproduce,
and the deployed predictor finds and measures nodules in held-out phantom series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.support.ct_data import BUNDLE_DIR, series_from_bytes

from medgate.datasets.ct_phantom import SPLIT_BASE, generate_ct_phantom, write_ct_folder
from medgate.models.backends import OnnxBackend, TorchScriptBackend
from medgate.models.bundle import MODEL_FILES, Bundle
from medgate.models.predictor import load_predictor
from medgate.models.registry import discover_bundles
from medgate.training.ct_nodule import evaluate_nodules


def test_registry_lists_the_bundle_with_ct_routing(ct_bundle: Bundle) -> None:
    bundles, _ = discover_bundles(BUNDLE_DIR.parent)
    found = {b.name: b for b in bundles}
    assert "ct_nodule_seg" in found
    spec = found["ct_nodule_seg"].spec
    assert spec.routing.modalities == ["CT"] and spec.routing.body_parts == ["CHEST"]
    assert spec.routing.min_slices == 8
    assert spec.labels[0].code.value == "27925004"  # DICOM CID 7159 Nodule
    assert spec.labels[0].finding_site and spec.labels[0].finding_site.value == "39607008"
    assert {m.unit.value for m in spec.measurements} == {"mm", "mm3"}
    assert ct_bundle.demo and ct_bundle.warning
    assert (BUNDLE_DIR / "docs" / "README.md").read_text().count("not for clinical use") >= 1
    size = sum(f.stat().st_size for f in BUNDLE_DIR.rglob("*") if f.is_file())
    assert size < 5_000_000


def test_onnx_and_torchscript_agree(ct_bundle: Bundle) -> None:
    phantom = generate_ct_phantom(SPLIT_BASE["test"] + 700, nodules=1)
    predictor = load_predictor(ct_bundle)
    x = predictor.preprocess(series_from_bytes(phantom))[None]
    batch = np.concatenate([x, x[:, :, ::-1].copy()])  # dynamic batch of 2
    onnx = OnnxBackend(BUNDLE_DIR / MODEL_FILES["onnx"], "cpu").run(batch)
    ts = TorchScriptBackend(BUNDLE_DIR / MODEL_FILES["torchscript"], "cpu", ["logits"]).run(batch)
    assert onnx["logits"].shape == (2, 2, *ct_bundle.spec.preprocessing.spatial_size)
    assert float(np.abs(onnx["logits"] - ts["logits"]).max()) <= 1e-4


def test_predictor_finds_and_measures_held_out_nodules(ct_bundle: Bundle) -> None:
    """Held-out seeds (never trained on); the bundle finds every 9-15 mm nodule and 0.85-0.95 of
    the 6.5-9 mm ones (0.95 overall at <= 1 FP per scan), so the test asks for at least two of
    these four nodules (7.6-12.2 mm) found (mask overlap) and measured within 2 mm."""
    predictor = load_predictor(ct_bundle)
    matched = 0
    for offset in (503, 504, 505, 506):
        phantom = generate_ct_phantom(SPLIT_BASE["test"] + offset, nodules=1)
        truth = phantom.nodules[0]
        datasets = series_from_bytes(phantom)
        result = predictor.predict(datasets[::-1])  # arrival order must not matter
        assert result.segmentation is not None
        mask = result.segmentation.masks["volume"]
        assert mask.shape == phantom.hu.shape
        assert result.segmentation.frame_sop_instance_uids == [d.SOPInstanceUID for d in datasets]
        truth_slices = {
            datasets[k].SOPInstanceUID for k in np.flatnonzero(phantom.mask.any(axis=(1, 2)))
        }
        present = [f for f in result.findings if f.present]
        if not present:
            assert len(result.findings) == 1 and mask.sum() == 0
        for number, finding in enumerate(present, start=1):
            assert finding.finding_type.value == "27925004"
            assert finding.tracking_id == f"nodule-{number}"
            units = {m.unit.value: m.value for m in finding.measurements}
            assert set(units) == {"mm", "mm3"}
            on_truth = truth_slices & set(finding.measurements[0].source_sop_instance_uids)
            if (
                on_truth
                and mask[phantom.mask > 0].mean() > 0.3
                and abs(units["mm"] - truth.diameter_mm) <= 2.0
            ):
                matched += 1
    assert matched >= 2


def test_committed_metrics_reproduce_on_regenerated_held_out_set(
    ct_bundle: Bundle, tmp_path: Path
) -> None:
    recorded = ct_bundle.spec.metrics["held_out_small"]["metrics"]
    evaluation = ct_bundle.spec.evaluation
    assert evaluation["split"] == "test" and evaluation["base"] == SPLIT_BASE["test"]
    write_ct_folder(tmp_path, "test", int(evaluation["small_count"]))
    report = evaluate_nodules(ct_bundle, tmp_path)
    got, want = report["operating_point"], recorded["operating_point"]
    assert got["nodules"] == want["nodules"]
    assert got["detected"] == want["detected"]
    assert got["false_positives"] == want["false_positives"]
    if want["diameter_abs_error_mm"] is not None:
        assert abs(got["diameter_abs_error_mm"] - want["diameter_abs_error_mm"]) < 0.05
    assert (
        abs(report["sensitivity_at_1fp_per_scan"] - recorded["sensitivity_at_1fp_per_scan"]) < 1e-9
    )
    full = ct_bundle.spec.metrics["held_out"]["metrics"]
    assert full["studies"] == evaluation["count"]


def _found_and_measured(predictor, phantom) -> bool:
    """A present finding on the nodule's slices whose mask covers it, measured within 2 mm."""
    truth = phantom.nodules[0]
    datasets = series_from_bytes(phantom)
    result = predictor.predict(datasets)
    assert result.segmentation is not None
    mask = result.segmentation.masks["volume"]
    truth_slices = {
        datasets[k].SOPInstanceUID for k in np.flatnonzero(phantom.mask.any(axis=(1, 2)))
    }
    for finding in (f for f in result.findings if f.present):
        units = {m.unit.value: m.value for m in finding.measurements}
        if (
            truth_slices & set(finding.measurements[0].source_sop_instance_uids)
            and mask[phantom.mask > 0].any()
            and abs(units["mm"] - truth.diameter_mm) <= 2.0
        ):
            return True
    return False


def test_small_nodules_are_found_by_the_candidate_reducer(ct_bundle: Bundle) -> None:
    """4-6.5 mm nodules (1-2 voxels; the network alone found 0.13 of them) on held-out seeds:
    the second stage (HU candidates + logistic regression) finds 0.87 of them on the test split,
    so at least three of these four (4.4-6.3 mm) are found and measured within 2 mm."""
    model = ct_bundle.spec.extra["candidate_model"]
    fitted = model["fitted_on"]
    # fitted on training-range seeds after the network's training studies: never trained on
    assert fitted["split"] == "train"
    assert int(fitted["seeds"].split("..")[0]) >= ct_bundle.spec.training_data["train_studies"]
    predictor = load_predictor(ct_bundle)
    found = 0
    for offset in (600, 613, 615, 623):
        phantom = generate_ct_phantom(SPLIT_BASE["test"] + offset, nodules=1)
        assert phantom.nodules[0].diameter_mm < 6.5
        found += _found_and_measured(predictor, phantom)
    assert found >= 3
