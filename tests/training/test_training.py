"""Training: the loss falls, checkpoints resume, TensorBoard events are written, the exported bundle
has a dynamic batch axis and matches PyTorch; the CLI trains, evaluates and dispatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.models.bundle import Bundle
from medgate.models.predictor import load_predictor
from medgate.models.registry import discover_bundles
from medgate.training.config import parse_train_config
from medgate.training.image_trainer import CHECKPOINT, train_image_model


def _config(tmp: Path, task: str, **changes: object) -> dict:
    base: dict = {
        "task": task,
        "preset": "cxr_findings" if task == "classification" else "cxr_lung_heart",
        "name": f"small_{task}",
        "out": str(tmp / f"bundle_{task}"),
        "run_dir": str(tmp / f"run_{task}"),
        "size": 48,
        "epochs": 3,
        "batch_size": 16,
        "lr": 5e-3,
        "data": {"generate": {"train": 48, "val": 16}},
        "network": {"kind": "map_classifier", "args": {"channels": [8, 16, 16]}}
        if task == "classification"
        else {"kind": "unet", "args": {"channels": [8, 16], "strides": [2]}},
    }
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared phantom folders (train/val), generated once for the module."""
    from medgate.datasets.folder import write_phantom_folder

    root = tmp_path_factory.mktemp("data")
    write_phantom_folder(root / "train", "train", 48)
    write_phantom_folder(root / "val", "val", 16)
    return root


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_loss_falls_resume_and_export(task: str, tmp_path: Path, small_data: Path) -> None:
    data = {"train": str(small_data / "train"), "val": str(small_data / "val")}
    cfg = parse_train_config(_config(tmp_path, task, data=data))
    bundle = train_image_model(cfg, progress=False)
    run_dir = Path(cfg.run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / CHECKPOINT).is_file()

    # Resume: a longer run continues from the checkpoint instead of starting over.
    longer = parse_train_config(_config(tmp_path, task, data=data, epochs=4))
    bundle = train_image_model(longer, progress=False)
    resumed = json.loads((run_dir / "history.json").read_text())
    assert len(resumed) == 4 and resumed[:3] == history

    # Export: a batch size not used at export time goes through ONNX; parity with TorchScript.
    assert bundle.spec.onnx_opset == 17 and bundle.metadata["medgate"]["checksums"]
    predictor = load_predictor(bundle)
    batch = np.random.default_rng(0).random((5, 1, 48, 48), dtype=np.float32)
    out = predictor.infer(batch)
    module = torch.jit.load(str(bundle.model_files["torchscript"]))
    with torch.inference_mode():
        reference = module(torch.from_numpy(batch))
    ref = reference[0] if isinstance(reference, tuple) else reference
    assert out["logits"].shape[0] == 5
    assert np.abs(out["logits"] - ref.numpy()).max() < 1e-4
    if task == "classification":
        assert all(0.01 <= label.threshold <= 0.99 for label in bundle.spec.labels)
    else:
        assert bundle.spec.measurements[0].unit.value == "1"


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'epochs'"):
        parse_train_config(_config(tmp_path, "classification", epochs=0))
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "astrology"\n')
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code != 0 and "unknown task" in result.output
    missing = runner.invoke(app, ["train", str(tmp_path / "none.toml")])
    assert missing.exit_code != 0 and "not found" in missing.output


def test_cli_train_evaluate_phantoms(tmp_path: Path) -> None:
    runner = CliRunner()
    gen = runner.invoke(app, ["phantoms", str(tmp_path / "held"), "--count", "12"])
    assert gen.exit_code == 0, gen.output
    cfg = _config(tmp_path, "segmentation", epochs=1)
    cfg_path = tmp_path / "seg.json"
    cfg_path.write_text(json.dumps(cfg))
    trained = runner.invoke(app, ["train", str(cfg_path), "--quiet"])
    assert trained.exit_code == 0, trained.output
    bundle_dir = Path(cfg["out"])
    report_dir = tmp_path / "report"
    result = runner.invoke(
        app,
        ["evaluate", str(bundle_dir), "--data", str(tmp_path / "held"), "--out", str(report_dir)],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["studies"] == 12 and "dice_lung" in metrics["metrics"]
    assert (report_dir / "dice.png").stat().st_size > 1000
    assert (report_dir / "measurement_cardiothoracic_ratio.png").is_file()
    card = (report_dir / "MODEL_CARD.md").read_text()
    assert "not for clinical use" in card and "Intended use" in card
    exported = runner.invoke(app, ["export-bundle", str(cfg_path), "--out", str(tmp_path / "re")])
    assert exported.exit_code == 0, exported.output
    assert Bundle.load(tmp_path / "re").device_uid == Bundle.load(bundle_dir).device_uid


def test_tabular_configs_go_to_the_tabular_trainer(tmp_path: Path) -> None:
    cfg = tmp_path / "tabular.toml"
    cfg.write_text(f'task = "tabular"\nout = "{tmp_path / "models"}"\n')
    result = CliRunner().invoke(app, ["train", str(cfg), "--quiet"])
    assert result.exit_code == 0, result.output
    written = Path(result.output.split("bundle written:")[1].strip())
    assert written.parent == tmp_path / "models"
    assert (written / "configs" / "metadata.json").is_file()
    assert (written / "models" / "model.onnx").is_file()
    # The registry never crashes on it: it is listed or reported with a reason.
    bundles, problems = discover_bundles(tmp_path / "models")
    assert len(bundles) + len(problems) == 1
