"""Data of the models tests: tiny real bundles (exported by medgate's own exporter), phantom
studies as data sets read back from Part 10 bytes, and a plain MONAI bundle."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import torch

from medgate.datasets.cxr_phantom import generate_phantom
from medgate.datasets.phantom_dicom import phantom_to_dataset
from medgate.models.bundle import Bundle, MedgateSpec
from medgate.models.networks import build_network
from medgate.training.export import write_bundle
from medgate.training.presets import preset

SIZE = 32


def phantom_datasets(seed: int, **findings: bool) -> list[pydicom.Dataset]:
    """One phantom study as the gateway sees it: parsed back from Part 10 bytes."""
    ds = phantom_to_dataset(generate_phantom(seed, findings=findings or None))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return [pydicom.dcmread(buffer)]


def make_tiny_bundle(root: Path, kind: str, name: str | None = None) -> Bundle:
    """An untrained but real bundle: ``kind`` is 'classifier' or 'segmenter'."""
    torch.manual_seed(0)
    if kind == "classifier":
        spec = MedgateSpec(name=name or "tiny_cls", demo=True, **preset("cxr_findings", SIZE))
        net = build_network("map_classifier", num_labels=4, channels=(4, 8, 8))
        names = ["logits", "maps"]
    else:
        spec = MedgateSpec(name=name or "tiny_seg", demo=True, **preset("cxr_lung_heart", SIZE))
        net = build_network("unet", channels=(4, 8), strides=(2,), num_res_units=0)
        names = ["logits"]
    example = torch.rand(2, 1, SIZE, SIZE)
    return write_bundle(
        root / str(spec.name),
        model=net,
        example=example,
        spec=spec,
        output_names=names,
        version="0.0.1",
        description=f"tiny {kind}",
        authors="tests",
        intended_use="tests only",
    )


def write_plain_monai_bundle(folder: Path, size: int = SIZE) -> Path:
    """A standard MONAI bundle: metadata.json without medgate keys, TorchScript only."""
    torch.manual_seed(1)
    net = build_network("unet", channels=(4, 8), strides=(2,), num_res_units=0).eval()
    (folder / "models").mkdir(parents=True)
    (folder / "configs").mkdir()
    torch.jit.trace(net, torch.rand(1, 1, size, size)).save(str(folder / "models" / "model.ts"))
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "initial"},
        "monai_version": "1.3.0",
        "pytorch_version": "2.1.0",
        "numpy_version": "1.26.0",
        "optional_packages_version": {},
        "task": "Lung and heart segmentation",
        "description": "A plain MONAI bundle",
        "authors": "someone else",
        "copyright": "Copyright (c) someone else",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": 1,
                    "spatial_shape": [size, size],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 3,
                    "spatial_shape": [size, size],
                    "dtype": "float32",
                    "value_range": [0, 1, 2],
                    "is_patch_data": False,
                    "channel_def": {"0": "background", "1": "lung", "2": "heart"},
                }
            },
        },
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return folder


def random_batch(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, size, size), dtype=np.float32)
