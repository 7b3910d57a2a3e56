"""Training arrays from labelled folders, preprocessed exactly as the predictor will do it.

The images are decoded and transformed once (``build_transform`` of the bundle's declared
preprocessing, the same function inference uses) and kept in memory: phantom data sets are small
and a 2-core machine cannot afford to redo the transforms every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medgate.datasets.folder import LabeledStudy, read_labeled_folder, write_phantom_folder
from medgate.models.bundle import Preprocessing
from medgate.models.images import read_radiograph
from medgate.models.transforms import build_transform
from medgate.training.config import DataSpec


@dataclass
class ArrayData:
    """Preprocessed inputs and targets of one split."""

    x: np.ndarray  # (N, 1, H, W) float32
    y: np.ndarray  # (N, K) float32 labels, or (N, H, W) int64 label masks
    studies: list[LabeledStudy]


def resolve_splits(data: DataSpec, run_dir: Path, progress: bool = False) -> dict[str, Path]:
    """Folders per split: the configured ones, or phantoms generated into ``run_dir/data``."""
    folders: dict[str, Path] = {}
    for split in ("train", "val", "test"):
        folder = getattr(data, split)
        if folder is not None:
            folders[split] = Path(folder)
    generate = data.generate
    if generate is not None:
        for split in ("train", "val", "test"):
            count = getattr(generate, split)
            if count and split not in folders:
                target = run_dir / "data" / f"{split}-{generate.base}-{count}"
                if not (target / "labels.csv").is_file():
                    write_phantom_folder(
                        target, split, count, base=generate.base, progress=progress
                    )
                folders[split] = target
    if "train" not in folders:
        raise ValueError("training config: give data.train or data.generate.train")
    return folders


def load_arrays(
    folder: Path,
    preprocessing: Preprocessing,
    task: str,
    findings: Sequence[str],
    progress: bool = False,
) -> ArrayData:
    """Decode, preprocess and stack a labelled folder for ``task``."""
    studies = read_labeled_folder(folder, findings)
    if not studies:
        raise ValueError(f"{folder}: labels.csv lists no studies")
    transform = build_transform(preprocessing.transforms)
    size = tuple(preprocessing.spatial_size)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for study in tqdm(studies, desc=f"load {folder.name}", disable=not progress, unit="study"):
        image, _ = read_radiograph(study.datasets())
        xs.append(transform(image[None]))
        if task == "classification":
            missing = [name for name in findings if name not in study.labels]
            if missing:
                raise ValueError(f"{folder}: study {study.patient_id} lacks labels {missing}")
            ys.append(np.array([study.labels[name] for name in findings], np.float32))
        else:
            mask = study.mask_array()
            if mask is None:
                raise ValueError(f"{folder}: study {study.patient_id} has no mask")
            tensor = torch.from_numpy(mask[None, None].astype(np.float32))
            small = torch.nn.functional.interpolate(tensor, size=size, mode="nearest-exact")
            ys.append(small[0, 0].numpy().astype(np.int64))
    return ArrayData(x=np.stack(xs).astype(np.float32), y=np.stack(ys), studies=studies)
