"""The predictor interface the serving layer codes against: preprocess / infer / postprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.support.models_data import SIZE, phantom_datasets, random_batch

from medgate.models.backends import TorchScriptBackend
from medgate.models.bundle import Bundle
from medgate.models.findings import ModelResult
from medgate.models.networks import build_network
from medgate.models.predictor import load_predictor
from medgate.models.transforms import build_transform
from medgate.training.export import check_parity, export_onnx, export_torchscript


def test_classifier_result_follows_the_findings_contract(tiny_classifier: Bundle) -> None:
    predictor = load_predictor(tiny_classifier)
    datasets = phantom_datasets(5)
    x = predictor.preprocess(datasets)
    assert x.shape == (1, SIZE, SIZE) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    result = predictor.predict(datasets)
    assert isinstance(result, ModelResult)
    assert result.bundle_name == "tiny_cls" and result.task == "classification"
    assert [f.label for f in result.findings] == [
        "nodule",
        "effusion",
        "pneumothorax",
        "cardiomegaly",
    ]
    for finding in result.findings:
        assert finding.finding_type.scheme == "SCT"
        assert finding.present == (finding.probability >= finding.threshold)
    uid = str(datasets[0].SOPInstanceUID)
    assert result.source_sop_instance_uids == [uid]
    assert result.device_uid == tiny_classifier.device_uid
    heat = result.heatmaps[uid]
    assert heat.shape == (datasets[0].Rows, datasets[0].Columns)
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert "findings" in result.model_dump(mode="json")


def test_batched_inference_equals_one_by_one(tiny_classifier: Bundle) -> None:
    predictor = load_predictor(tiny_classifier)
    studies = [phantom_datasets(seed) for seed in (1, 2, 3)]
    batch = np.stack([predictor.preprocess(ds) for ds in studies])
    outputs = predictor.infer(batch)
    assert outputs["logits"].shape == (3, 4)
    for i, datasets in enumerate(studies):
        alone = predictor.predict(datasets)
        batched = predictor.postprocess(predictor.split(outputs, i), datasets)
        for a, b in zip(alone.findings, batched.findings, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-5)
    with pytest.raises(ValueError, match="batch must have 4 dims"):
        predictor.infer(batch[0])


def test_segmentation_mask_on_source_grid_and_ctr(tiny_segmenter: Bundle) -> None:
    predictor = load_predictor(tiny_segmenter)
    datasets = phantom_datasets(8)
    result = predictor.predict(datasets)
    ds = datasets[0]
    seg = result.segmentation
    assert seg is not None
    assert [(s.number, s.label) for s in seg.segments] == [(1, "lung"), (2, "heart")]
    mask = seg.masks[str(ds.SOPInstanceUID)]
    assert mask.shape == (ds.Rows, ds.Columns) and mask.dtype == np.uint8
    (ctr,) = result.measurements
    assert ctr.unit.value == "1" and ctr.unit.scheme == "UCUM"
    assert ctr.value >= 0.0
    assert ctr.source_sop_instance_uids == [str(ds.SOPInstanceUID)]


def test_onnx_and_torchscript_agree(tiny_classifier: Bundle, tiny_segmenter: Bundle) -> None:
    for bundle in (tiny_classifier, tiny_segmenter):
        onnx = load_predictor(bundle)
        assert onnx.backend.name == "onnx"
        ts = TorchScriptBackend(
            bundle.model_files["torchscript"], "cpu", bundle.spec.extra["output_names"]
        )
        batch = random_batch(5, seed=3)  # a batch size never seen at export: dynamic axis
        a, b = onnx.infer(batch), ts.run(batch)
        for name in a:
            assert np.abs(a[name] - b[name]).max() < 1e-4
        assert max(bundle.spec.extra["parity_max_abs_diff"].values()) < 1e-4


def test_parity_check_against_eager_model(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = build_network("map_classifier", num_labels=4, channels=(4, 8)).eval()
    names = ["logits", "maps"]
    example = torch.rand(1, 1, SIZE, SIZE)
    export_onnx(net, example, tmp_path / "models" / "model.onnx", names)
    export_torchscript(net, example, tmp_path / "models" / "model.ts")
    diffs = check_parity(net, tmp_path, random_batch(3), names)
    assert set(diffs) == {"onnx", "torchscript"}
    assert max(diffs.values()) < 1e-4


def test_monochrome1_is_inverted_and_bad_pixels_are_clear_errors(tiny_classifier: Bundle) -> None:
    predictor = load_predictor(tiny_classifier)
    datasets = phantom_datasets(4)
    normal, _ = predictor.read(datasets)
    ds = datasets[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (4095 - ds.pixel_array).astype("<u2").tobytes()
    inverted, _ = predictor.read([ds])
    assert np.allclose(normal - normal.min(), inverted - inverted.min())
    empty = phantom_datasets(4)[0]
    del empty.PixelData
    with pytest.raises(ValueError, match="no pixel data"):
        predictor.preprocess([empty])
    with pytest.raises(ValueError, match="no data sets"):
        predictor.preprocess([])


def test_only_allowed_transforms_are_built() -> None:
    from medgate.models.bundle import TransformSpec

    with pytest.raises(ValueError, match="not an allowed"):
        build_transform([TransformSpec(name="Lambda", args={"func": "print"})])
    resize = build_transform([TransformSpec(name="Resize", args={"spatial_size": [8, 8]})])
    assert resize(np.ones((1, 20, 30), np.float32)).shape == (1, 8, 8)
