"""The registry: valid bundles load, broken ones are reported with their reason and skipped,
plain MONAI bundles load from network_data_format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.support.models_data import phantom_datasets, write_plain_monai_bundle
from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.core.checksums import sha256_file
from medgate.models.bundle import Bundle, BundleError, device_uid_for
from medgate.models.predictor import load_predictor
from medgate.models.registry import discover_bundles, get_bundle


def _copy(src: Path, root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(src, target)
    meta = target / "configs" / "metadata.json"
    data = json.loads(meta.read_text())
    data["medgate"]["name"] = name
    meta.write_text(json.dumps(data))
    return target


def _edit(folder: Path, change) -> None:
    meta = folder / "configs" / "metadata.json"
    data = json.loads(meta.read_text())
    change(data)
    meta.write_text(json.dumps(data))


def test_broken_bundles_are_reported_and_skipped(tmp_path: Path, tiny_classifier: Bundle) -> None:
    root = tmp_path / "models"
    root.mkdir()
    _copy(tiny_classifier.path, root, "good")
    (root / "no_metadata" / "models").mkdir(parents=True)
    bad_json = _copy(tiny_classifier.path, root, "bad_json")
    (bad_json / "configs" / "metadata.json").write_text("{not json")
    no_model = _copy(tiny_classifier.path, root, "no_model")
    for file in (no_model / "models").iterdir():
        file.unlink()
    tampered = _copy(tiny_classifier.path, root, "tampered")
    with (tampered / "models" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    no_monai = _copy(tiny_classifier.path, root, "no_monai")
    _edit(no_monai, lambda d: d.pop("monai_version"))
    bad_label = _copy(tiny_classifier.path, root, "bad_label")
    _edit(bad_label, lambda d: d["medgate"]["labels"][0].update(threshold=3))
    (root / "notes.txt").write_text("not a bundle")

    bundles, problems = discover_bundles(root)
    assert [b.name for b in bundles] == ["good"]
    reasons = {p.path.name: p.reason for p in problems}
    assert "configs/metadata.json" in reasons["no_metadata"]
    assert "not valid JSON" in reasons["bad_json"]
    assert "no models/model.onnx" in reasons["no_model"]
    assert "sha256" in reasons["tampered"]
    assert "monai_version" in reasons["no_monai"]
    assert "labels.0.threshold" in reasons["bad_label"]
    with pytest.raises(KeyError, match=r"tampered.*sha256"):
        get_bundle(root, "tampered")
    assert get_bundle(root, "good").name == "good"
    missing, problems = discover_bundles(tmp_path / "absent")
    assert missing == [] and "does not exist" in problems[0].reason


def test_duplicate_names_keep_the_first(tmp_path: Path, tiny_classifier: Bundle) -> None:
    _copy(tiny_classifier.path, tmp_path, "a")
    b = _copy(tiny_classifier.path, tmp_path, "b")
    _edit(b, lambda d: d["medgate"].update(name="a"))
    bundles, problems = discover_bundles(tmp_path)
    assert [x.path.name for x in bundles] == ["a"]
    assert "duplicate" in problems[0].reason


def test_device_uid_is_derived_from_the_model_file(tiny_classifier: Bundle) -> None:
    sha = sha256_file(tiny_classifier.path / "models" / "model.onnx")
    assert tiny_classifier.device_uid == device_uid_for(sha)
    assert tiny_classifier.device_uid.startswith("2.25.")
    assert len(tiny_classifier.device_uid) <= 64
    assert device_uid_for("0" * 64) != device_uid_for("1" * 64)
    summary = tiny_classifier.summary()
    assert summary["demo"] and "not for clinical use" in summary["warning"]
    assert summary["backends"] == ["onnx", "torchscript"]


def test_plain_monai_bundle_loads_and_predicts(tmp_path: Path) -> None:
    folder = write_plain_monai_bundle(tmp_path / "plain_seg")
    bundles, problems = discover_bundles(tmp_path)
    assert problems == []
    (bundle,) = bundles
    assert not bundle.has_medgate_keys
    assert bundle.name == "plain_seg" and bundle.task == "segmentation"
    assert [label.name for label in bundle.spec.labels] == ["lung", "heart"]
    assert list(bundle.model_files) == ["torchscript"]
    predictor = load_predictor(folder)
    assert predictor.backend.name == "torchscript"
    datasets = phantom_datasets(3)
    result = predictor.predict(datasets)
    mask = result.segmentation.masks[datasets[0].SOPInstanceUID]
    assert mask.shape == (datasets[0].Rows, datasets[0].Columns)
    assert [s.label for s in result.segmentation.segments] == ["lung", "heart"]


def test_missing_network_data_format_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_plain_monai_bundle(tmp_path / "plain")
    _edit(folder, lambda d: d["network_data_format"].update(inputs={}))
    with pytest.raises(BundleError, match="network_data_format"):
        Bundle.load(folder)


def test_models_list_command(bundle_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    shutil.copytree(bundle_root, tmp_path / "m")
    (tmp_path / "m" / "broken" / "configs").mkdir(parents=True)
    (tmp_path / "m" / "broken" / "configs" / "metadata.json").write_text("[]")
    result = runner.invoke(app, ["models", "list", "--path", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {b["name"] for b in data["bundles"]} == {"tiny_cls", "tiny_seg"}
    assert data["problems"][0]["reason"].startswith("configs/metadata.json must hold")
    table = runner.invoke(app, ["models", "list", "--path", str(tmp_path / "m")])
    assert table.exit_code == 0 and "tiny_seg" in table.output and "skipped" in table.output
    shown = runner.invoke(app, ["models", "show", "tiny_cls", "--path", str(tmp_path / "m")])
    assert shown.exit_code == 0 and "786838002" in shown.output
    missing = runner.invoke(app, ["models", "show", "nope", "--path", str(tmp_path / "m")])
    assert missing.exit_code != 0 and "available" in missing.output


def test_unreadable_model_file_is_a_bundle_error(tmp_path: Path, tiny_classifier: Bundle) -> None:
    folder = _copy(tiny_classifier.path, tmp_path, "garbage")
    _edit(folder, lambda d: d["medgate"].update(checksums={}, device_uid=None))
    (folder / "models" / "model.onnx").write_bytes(b"not an onnx model" * 8)
    bundle = Bundle.load(folder)  # no checksums recorded: the registry cannot tell
    with pytest.raises(BundleError, match="garbage: the model cannot be loaded"):
        load_predictor(bundle)
