"""``medgate models list`` / ``models check`` / ``export-bundle --onnx`` on zoo-shaped bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.monai_zoo_bundles import write_classification_bundle, write_segmentation_bundle
from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.datasets.ct_phantom import generate_ct_phantom, write_ct_series
from medgate.models.approval import bundle_hash, trust_entry


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo-cli")
    series = root / "series"
    write_ct_series(generate_ct_phantom(5), series)  # mask.npz stays: check skips non-DICOM
    bundles = root / "bundles"
    return {
        "series": series,
        "bundles": bundles,
        "seg": write_segmentation_bundle(bundles),
        "cls": write_classification_bundle(bundles),
    }


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})
    return result.exit_code, result.output


def test_list_prints_the_entry_that_approves_a_new_bundle(zoo: dict[str, Path]) -> None:
    seg_entry = trust_entry("zoo_ct_seg", bundle_hash(zoo["seg"]))
    code, out = invoke("models", "list", "--path", str(zoo["bundles"]))
    assert code == 1  # nothing servable
    assert sum(line.startswith("needs approval") for line in out.splitlines()) == 2
    assert seg_entry in out
    assert "MEDGATE_MODELS__TRUSTED=" in out

    env = {"MEDGATE_MODELS__TRUSTED": json.dumps([seg_entry])}
    code, out = invoke("models", "list", "--path", str(zoo["bundles"]), "--json", env=env)
    assert code == 0
    listing = json.loads(out)
    (seg,) = listing["bundles"]
    assert (seg["name"], seg["approval"], seg["trust_entry"]) == (
        "zoo_ct_seg",
        "approved",
        seg_entry,
    )
    assert seg["serving"].endswith("CPU")
    (waiting,) = listing["problems"]
    assert waiting["trust_entry"] == trust_entry("zoo_ct_cls", bundle_hash(zoo["cls"]))


def test_check_compares_the_monai_run_with_medgates(zoo: dict[str, Path]) -> None:
    code, out = invoke("models", "check", str(zoo["seg"]), "--series", str(zoo["series"]))
    assert code == 0, out
    dice = float(out.split("Dice ")[1].split()[0])
    assert dice >= 0.99 and "agree" in out
    assert trust_entry("zoo_ct_seg", bundle_hash(zoo["seg"])) in out
    code, out = invoke(
        "models",
        "check",
        "zoo_ct_cls",
        "--path",
        str(zoo["bundles"]),
        "--series",
        str(zoo["series"]),
    )
    assert code == 0, out
    assert float(out.split("max abs difference ")[1].split()[0]) <= 1e-4


def test_check_says_when_the_series_folder_is_wrong(zoo: dict[str, Path], tmp_path: Path) -> None:
    code, out = invoke("models", "check", str(zoo["seg"]), "--series", str(tmp_path))
    assert code != 0 and "no DICOM files" in out


def test_export_bundle_onnx_writes_a_parity_checked_model(
    zoo: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = shutil.copytree(zoo["seg"], tmp_path / "zoo_ct_seg")
    before = trust_entry("zoo_ct_seg", bundle_hash(folder))
    code, out = invoke("export-bundle", str(folder), "--onnx", "--series", str(zoo["series"]))
    assert code == 0, out
    assert (folder / "models" / "model.onnx").is_file()
    difference = float(out.split("max abs difference to PyTorch ")[1].split()[0])
    assert difference < 1e-3
    assert float(out.split("agreement ")[1].split()[0]) >= 0.99
    after = trust_entry("zoo_ct_seg", bundle_hash(folder))
    assert after != before and after in out  # a new file: approve again
    code, out = invoke("models", "check", str(folder), "--series", str(zoo["series"]))
    assert code == 0 and "medgate on onnx" in out, out
