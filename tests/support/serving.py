"""Test helpers of the serving suite: tiny real ONNX bundles and phantom studies as Part 10 bytes.

The bundles are real: a small CNN exported by torch to ONNX, in the MONAI bundle layout with
medgate's metadata, loaded through the real registry and predictor. Their findings are not
meant to be accurate; the pipeline is what these tests check.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgate.datasets.cxr_phantom import FINDINGS, generate_phantom
from medgate.datasets.phantom_dicom import phantom_to_dataset

SIZE = 64

_CODES = {
    "nodule": ("27925004", "SCT", "Nodule"),
    "effusion": ("60046008", "SCT", "Pleural effusion"),
    "pneumothorax": ("36118008", "SCT", "Pneumothorax"),
    "cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
}


class TinyNet(torch.nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def export_onnx(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, *shape),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def write_bundle(
    root: Path, name: str, *, broken: bool = False, max_batch: int | None = None
) -> Path:
    """A classification bundle for chest radiographs (4 phantom findings) under ``root/name``."""
    folder = root / name
    onnx_path = folder / "models" / "model.onnx"
    if broken:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        onnx_path.write_bytes(b"this is not an ONNX model" * 10)
    else:
        export_onnx(TinyNet(len(FINDINGS)), onnx_path, (1, SIZE, SIZE))
    medgate = {
        "name": name,
        "task": "classification",
        "labels": [
            {
                "name": label,
                "index": i,
                "code": dict(zip(("value", "scheme", "meaning"), _CODES[label], strict=True)),
                "threshold": 0.5,
            }
            for i, label in enumerate(FINDINGS)
        ],
        "preprocessing": {
            "input_kind": "radiograph",
            "spatial_size": [SIZE, SIZE],
            "transforms": [
                {"name": "ScaleIntensity", "args": {"minv": 0.0, "maxv": 1.0}},
                {"name": "Resize", "args": {"spatial_size": [SIZE, SIZE], "mode": "area"}},
            ],
        },
        "postprocessing": {"activation": "sigmoid", "output": "logits"},
        "routing": {"modalities": ["DX", "CR"], "body_parts": ["CHEST"], "max_slices": 1},
        "demo": True,
        "metrics": {"note": "untrained test network"},
    }
    if max_batch is not None:
        medgate["max_batch_size"] = max_batch
    metadata = {
        "version": "0.0.1",
        "monai_version": "1.6",
        "pytorch_version": torch.__version__,
        "description": f"tiny test bundle {name}",
        "network_data_format": {
            "inputs": {
                "image": {"type": "image", "num_channels": 1, "spatial_shape": [SIZE, SIZE]}
            },
            "outputs": {"pred": {"type": "probabilities", "num_channels": len(FINDINGS)}},
        },
        "medgate": medgate,
    }
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return folder


def phantom_bytes(seed: int, namespace: str = "medgate-serving-tests", **changes: str) -> bytes:
    """One chest radiograph phantom as Part 10 bytes; ``changes`` override header keywords."""
    ds = phantom_to_dataset(generate_phantom(seed), namespace=namespace)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def study_uid_of(data: bytes) -> str:
    import pydicom

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)


def random_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, SIZE, SIZE), dtype=np.float32)


def ingest(store: object, data: bytes) -> str:
    """Store one Part 10 file through the real ``InstanceStore`` (as the receiver does after a
    C-STORE) and return its StudyInstanceUID."""
    import pydicom

    from medgate.store.instances import InstanceRecord

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    record = InstanceRecord(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        size=0,
        sha256="",
        path="",
        modality=str(ds.get("Modality", "")),
        body_part=str(ds.get("BodyPartExamined", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        instance_number=int(ds.get("InstanceNumber", 1) or 1),
        calling_ae="TEST",
    )
    store.store(record, (data,))  # type: ignore[attr-defined]
    return str(ds.StudyInstanceUID)


def wait_for(predicate: object, timeout: float, interval: float = 0.2, what: str = "") -> object:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def orthanc_kinds(orthanc: object, study_uid: str) -> list[str]:
    """Modality of every instance Orthanc holds for a study (sorted)."""
    instances = orthanc.study_instances(study_uid)  # type: ignore[attr-defined]
    kinds = []
    for item in instances:
        tags = orthanc.get(f"/instances/{item['ID']}/simplified-tags")  # type: ignore[attr-defined]
        kinds.append(str(tags.get("Modality", "?")))
    return sorted(kinds)


def serving_overrides(bundle_root: Path) -> dict[str, dict[str, Any]]:
    """Config sections shared by every serving test (see ``serving_settings``)."""
    return {
        "models": {
            "path": str(bundle_root),
            "num_cpus": 0.1,
            "device": "cpu",
            "max_batch_size": 8,
            "batch_wait_timeout_s": 0.05,
        },
        "routing": {
            "rules": [
                {
                    "name": "broken",
                    "bundles": ["broken_model"],
                    "modalities": ["DX"],
                    "series_description_pattern": "BROKEN",
                },
                {
                    "name": "chest-radiograph",
                    "bundles": ["tiny_cxr"],
                    "modalities": ["DX", "CR"],
                    "body_parts": ["CHEST"],
                    "max_slices": 1,
                    "series_description_pattern": "^(?!.*BROKEN)",
                },
            ],
            "max_attempts": 2,
            "retry_backoff_seconds": 0.5,
        },
        "serving": {"poll_seconds": 0.1},
        "reports": {"languages": ["en", "zh"]},
    }
