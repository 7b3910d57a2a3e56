"""MONAI transforms declared by a bundle, built safely, shared by inference and training.

A bundle lists its preprocessing as ``[{"name": "ScaleIntensityRangePercentiles", "args": {...}}]``.
Only array transforms from ``monai.transforms`` are allowed, built by name with keyword
arguments: no ``_target_`` strings or ``$`` expressions are evaluated, so a bundle from elsewhere
cannot run code in the gateway. Training uses the very same function, so the model sees the same
input in training and in production.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai import transforms as mt

from medgate.models.bundle import TransformSpec

ALLOWED = {
    "ScaleIntensity",
    "ScaleIntensityRange",
    "ScaleIntensityRangePercentiles",
    "NormalizeIntensity",
    "ClipIntensityPercentiles",
    "Resize",
    "ResizeWithPadOrCrop",
    "Spacing",
    "SpatialPad",
    "CenterSpatialCrop",
    "Flip",
    "Rotate90",
    "ThresholdIntensity",
}


def build_transform(specs: Sequence[TransformSpec]) -> Callable[[np.ndarray], np.ndarray]:
    """A function: channel-first array -> transformed float32 numpy array.

    Raises ``ValueError`` for a transform name outside the allowed MONAI array transforms.
    """
    steps = []
    for spec in specs:
        if spec.name not in ALLOWED or not hasattr(mt, spec.name):
            raise ValueError(f"transform {spec.name!r} is not an allowed MONAI array transform")
        steps.append(getattr(mt, spec.name)(**spec.args))
    chain = mt.Compose(steps) if steps else None

    def apply(image: np.ndarray) -> np.ndarray:
        if chain is None:
            return image.astype(np.float32)
        result = chain(image)
        if isinstance(result, torch.Tensor):
            result = result.detach().cpu().numpy()
        return np.asarray(result, dtype=np.float32)

    return apply


def resize_scores(scores: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize channel-first score maps (C, *spatial) to ``shape`` with (bi/tri)linear sampling."""
    tensor = torch.from_numpy(np.ascontiguousarray(scores, np.float32))[None]
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    out = torch.nn.functional.interpolate(tensor, size=tuple(shape), mode=mode, align_corners=False)
    return out[0].numpy()


def activate(scores: np.ndarray, activation: str, axis: int = 0) -> np.ndarray:
    """Sigmoid, softmax (over ``axis``) or identity."""
    scores = scores.astype(np.float64)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-scores))
    if activation == "softmax":
        shifted = scores - scores.max(axis=axis, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=axis, keepdims=True)
    return scores
