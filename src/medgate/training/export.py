"""Export a trained network as a bundle: ONNX (dynamic batch) + TorchScript + metadata.json.

The ONNX graph is the deployed artefact (ONNX Runtime in the gateway); TorchScript is the
fallback and the parity reference. ``check_parity`` compares both with the eager PyTorch model
(tolerance 1e-4): an export that changes the numbers is an error, not a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from medgate.core.checksums import sha256_file
from medgate.models.backends import OnnxBackend, TorchScriptBackend
from medgate.models.bundle import (
    DEMO_WARNING,
    METADATA_FILE,
    MODEL_FILES,
    Bundle,
    MedgateSpec,
    device_uid_for,
)

PARITY_TOLERANCE = 1e-4


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    output_names: list[str],
    opset: int = 17,
) -> None:
    """Write ``model`` as ONNX with a dynamic batch axis on the input and every output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"image": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write ``model`` traced to TorchScript."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    traced.save(str(path))


def _eager(model: torch.nn.Module, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = model.eval()(torch.from_numpy(x))
    items = list(out) if isinstance(out, (tuple, list)) else [out]
    return {n: t.numpy() for n, t in zip(names, items, strict=True)}


def check_parity(
    model: torch.nn.Module, bundle_dir: Path, x: np.ndarray, output_names: list[str]
) -> dict[str, float]:
    """Largest absolute difference of ONNX Runtime and TorchScript outputs vs eager PyTorch."""
    reference = _eager(model, x, output_names)
    result: dict[str, float] = {}
    onnx_path = bundle_dir / MODEL_FILES["onnx"]
    ts_path = bundle_dir / MODEL_FILES["torchscript"]
    if onnx_path.is_file():
        out = OnnxBackend(onnx_path, "cpu").run(x)
        result["onnx"] = max(float(np.abs(out[n] - reference[n]).max()) for n in output_names)
    if ts_path.is_file():
        out = TorchScriptBackend(ts_path, "cpu", output_names).run(x)
        result["torchscript"] = max(
            float(np.abs(out[n] - reference[n]).max()) for n in output_names
        )
    return result


def network_data_format(spec: MedgateSpec, output_names: list[str]) -> dict[str, Any]:
    """MONAI's ``network_data_format`` for a 2D/3D single-channel image input."""
    size = list(spec.preprocessing.spatial_size)
    if spec.task == "segmentation":
        channels = {"0": "background", **{str(lab.index): lab.name for lab in spec.labels}}
        out = {
            "type": "image",
            "format": "segmentation",
            "num_channels": len(channels),
            "spatial_shape": size,
            "dtype": "float32",
            "value_range": [],
            "is_patch_data": False,
            "channel_def": channels,
        }
    else:
        out = {
            "type": "probabilities",
            "format": "classification",
            "num_channels": len(spec.labels),
            "spatial_shape": [len(spec.labels)],
            "dtype": "float32",
            "value_range": [],
            "is_onehot": False,
            "channel_def": {str(lab.index): lab.name for lab in spec.labels},
        }
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "XR",
                "num_channels": 1,
                "spatial_shape": size,
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {output_names[0]: out},
    }


def write_bundle(
    out_dir: Path,
    *,
    model: torch.nn.Module,
    example: torch.Tensor,
    spec: MedgateSpec,
    output_names: list[str],
    version: str,
    description: str,
    authors: str,
    intended_use: str,
    opset: int = 17,
    references: list[str] | None = None,
    parity_input: np.ndarray | None = None,
) -> Bundle:
    """Export ``model`` into a fresh bundle directory ``out_dir`` and return the loaded bundle.

    The directory is rebuilt from scratch (stale files from an older export must not survive).
    checksums and device_uid are computed from the written model files; the parity figures are
    recorded in the metadata and a parity error above ``PARITY_TOLERANCE`` raises.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "configs").mkdir(parents=True)
    model = model.eval().cpu()
    export_onnx(model, example, out_dir / MODEL_FILES["onnx"], output_names, opset)
    export_torchscript(model, example, out_dir / MODEL_FILES["torchscript"])
    probe = parity_input if parity_input is not None else example.numpy()
    parity = check_parity(model, out_dir, probe.astype(np.float32), output_names)
    worst = max(parity.values())
    if worst > PARITY_TOLERANCE:
        raise RuntimeError(f"export parity error {worst:.2e} > {PARITY_TOLERANCE:.0e}: {parity}")
    checksums = {str(rel): sha256_file(out_dir / rel) for rel in MODEL_FILES.values()}
    spec = spec.model_copy(deep=True)
    spec.checksums = checksums
    spec.device_uid = device_uid_for(checksums[str(MODEL_FILES["onnx"])])
    spec.onnx_opset = opset
    spec.extra = {**spec.extra, "output_names": output_names, "parity_max_abs_diff": parity}
    if spec.demo and not spec.warning:
        spec.warning = DEMO_WARNING
    metadata: dict[str, Any] = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": version,
        "changelog": {version: "trained by medgate train"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {},
        "task": description,
        "description": description,
        "authors": authors,
        "copyright": f"Copyright (c) {dt.date.today().year} medgate contributors; Apache-2.0",
        "data_source": spec.training_data.get("source", ""),
        "data_type": "dicom",
        "image_classes": "single channel radiograph, intensities scaled to [0, 1]",
        "label_classes": ", ".join(lab.name for lab in spec.labels),
        "pred_classes": ", ".join(lab.name for lab in spec.labels),
        "eval_metrics": {},
        "intended_use": intended_use,
        "references": references or [],
        "network_data_format": network_data_format(spec, output_names),
        "medgate": spec.model_dump(mode="json"),
    }
    (out_dir / METADATA_FILE).write_text(
        json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return Bundle.load(out_dir)


def update_metadata(bundle_dir: Path, **changes: Any) -> Bundle:
    """Merge ``changes`` into metadata.json (``medgate`` is merged one level deep)."""
    path = Path(bundle_dir) / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key == "medgate" and isinstance(value, dict):
            metadata.setdefault("medgate", {}).update(value)
        else:
            metadata[key] = value
    path.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Bundle.load(bundle_dir)
