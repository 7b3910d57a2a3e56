"""Bundles shaped like the MONAI model zoo's, built by the tests (nothing downloaded).

``write_segmentation_bundle`` follows ``spleen_ct_segmentation``'s ``configs/inference.json``:
LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd 1.5 x 1.5 x 2.0, ScaleIntensityRanged
-57...164, SlidingWindowInferer 96^3, Activationsd, Invertd, AsDiscreted, SaveImaged, and an
ignite ``SupervisedEvaluator`` with ``CheckpointLoader`` for ``models/model.pt``; ``monai.bundle
run`` runs it unchanged (``run_with_monai``). The network is a fixed-weight 3x3x3 convolution:
channel 1 is the local mean of the windowed intensity minus 0.3, channel 0 its negative, so
the mask depends on the intensity window (foreground above about -57 + 0.3 * 221 = 9 HU: the
phantom's soft tissue, not its fat or lungs) and on the resampled geometry.
``write_classification_bundle`` uses the same preprocessing and a global-average head with
sigmoid outputs, no Invertd.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

# a channel_def as in the zoo's metadata.json
SEG_CHANNELS = {"0": "background", "1": "soft tissue"}
CLS_CHANNELS = {"0": "dense", "1": "bright"}


def _preprocessing() -> dict[str, Any]:
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "PydicomReader"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {
                "_target_": "Spacingd",
                "keys": "image",
                "pixdim": [1.5, 1.5, 2.0],
                "mode": "bilinear",
            },
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -57,
                "a_max": 164,
                "b_min": 0,
                "b_max": 1,
                "clip": True,
            },
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    }


def _evaluator() -> dict[str, Any]:
    """The zoo's evaluator block (ignite), so ``monai.bundle run`` runs the config as-is."""
    return {
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            },
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@evaluator.run()"],
    }


def _common(
    network_def: dict[str, Any] | str, postprocessing: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$[@dataset_dir]",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": _preprocessing(),
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        **_evaluator(),
    }


def _metadata(task_format: str, channels: dict[str, str], spatial: list[int]) -> dict[str, Any]:
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "monai_version": "1.6.1",
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "task": "test bundle shaped like the MONAI model zoo's",
        "description": "fixed-weight network; not a clinical model",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [0, 1],
                }
            },
            "outputs": {
                "pred": {
                    "type": "image" if task_format == "segmentation" else "probabilities",
                    "format": task_format,
                    "num_channels": len(channels),
                    "spatial_shape": spatial if task_format == "segmentation" else [],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "channel_def": channels,
                }
            },
        },
    }


def segmentation_weights() -> dict[str, torch.Tensor]:
    """Conv3d(1, 2, 3): channel 1 = mean of the 27 neighbours - 0.3, channel 0 = its negative."""
    weight = torch.zeros(2, 1, 3, 3, 3)
    weight[1] = 1.0 / 27.0
    weight[0] = -1.0 / 27.0
    return {"weight": weight, "bias": torch.tensor([0.3, -0.3])}


def write_segmentation_bundle(root: Path, name: str = "zoo_ct_seg") -> Path:
    folder = root / name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    network_def = {
        "_target_": "torch.nn.Conv3d",
        "in_channels": 1,
        "out_channels": 2,
        "kernel_size": 3,
        "padding": 1,
    }
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "meta_key_postfix": "meta_dict",
            "nearest_interp": False,
            "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
        },
    ]
    config = _common(network_def, postprocessing)
    config["imports"].append("$import numpy")
    config["inferer"] = {
        "_target_": "SlidingWindowInferer",
        "roi_size": [96, 96, 96],
        "sw_batch_size": 4,
        "overlap": 0.5,
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    metadata = _metadata("segmentation", SEG_CHANNELS, [96, 96, 96])
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    torch.save(segmentation_weights(), folder / "models" / "model.pt")
    return folder


def classification_weights() -> dict[str, torch.Tensor]:
    """Sequential(Conv3d(1, 2, 1), AdaptiveAvgPool3d(1), Flatten()): logit_c = w_c * mean + b_c
    over the windowed, resampled volume."""
    return {
        "0.weight": torch.tensor([8.0, -6.0]).reshape(2, 1, 1, 1, 1),
        "0.bias": torch.tensor([-2.0, 1.5]),
    }


def write_classification_bundle(root: Path, name: str = "zoo_ct_cls") -> Path:
    folder = root / name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    # a "$" expression, as zoo configs write networks that have no single _target_
    network_def = (
        "$torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.AdaptiveAvgPool3d(1), "
        "torch.nn.Flatten())"
    )
    postprocessing = [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}]
    config = _common(network_def, postprocessing)
    config["inferer"] = {"_target_": "SimpleInferer"}
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    metadata = _metadata("classes", CLS_CHANNELS, [96, 96, 96])
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    torch.save(classification_weights(), folder / "models" / "model.pt")
    return folder


def run_with_monai(bundle: Path, series_dir: Path, output_dir: Path) -> list[dict[str, Any]]:
    """``monai.bundle run`` on the bundle's own config, as a data scientist runs it; returns
    the evaluator's last (decollated) output: one dict with ``pred`` per study."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
        dataset_dir=str(series_dir),
        output_dir=str(output_dir),
    )
    workflow.initialize()
    workflow.run()
    output = list(workflow.parser.get_parsed_content("evaluator").state.output)
    workflow.finalize()
    return output


def read_saved_mask(path: Path) -> np.ndarray:
    """A mask SaveImaged wrote (NIfTI, column/row/slice) as (slice, row, column)."""
    import nibabel

    image: Any = nibabel.load(str(path))
    return np.transpose(np.squeeze(np.asarray(image.dataobj)), (2, 1, 0))
