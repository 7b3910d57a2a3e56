"""Network definitions for the demo bundles, built from MONAI blocks and kept tiny for CPUs.

Only training needs these: deployed bundles carry ONNX / TorchScript graphs, so the gateway runs
a model without its Python class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from torch import nn


class MapClassifier(nn.Module):
    """Multi-label classifier whose scores are pooled from per-label score maps.

    Each stage is two conv-norm-ReLU blocks followed by max pooling: max pooling keeps small
    bright structures (a 10 mm nodule is 3-4 pixels at 128 x 128), which strided convolutions
    tend to average away. A 1x1 head gives a (labels, h, w) map of logits and log-sum-exp
    pooling (close to a max for ``pool_sharpness`` >> 1) turns each map into one logit. The
    maps double as heat-maps (where the model saw each finding) at no extra cost, which the
    reports overlay on the image. ``forward`` returns ``(logits, maps)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_labels: int = 4,
        channels: Sequence[int] = (8, 16, 32, 64),
        pool_sharpness: float = 10.0,
    ) -> None:
        super().__init__()
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [
                Convolution(spatial_dims, previous, width, norm="BATCH", act="RELU"),
                Convolution(spatial_dims, width, width, norm="BATCH", act="RELU"),
                pool(2),
            ]
            previous = width
        self.encoder = nn.Sequential(*layers)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.head = conv(previous, num_labels, kernel_size=1)
        self.pool_sharpness = pool_sharpness

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.head(self.encoder(x))
        flat = maps.flatten(2)
        r = self.pool_sharpness
        count = torch.log(torch.tensor(float(flat.shape[-1]), dtype=flat.dtype))
        logits = (torch.logsumexp(r * flat, dim=-1) - count) / r
        return logits, maps


def build_network(kind: str, **kwargs: object) -> nn.Module:
    """A network by name: ``map_classifier`` or ``unet`` (MONAI UNet)."""
    if kind == "map_classifier":
        return MapClassifier(**kwargs)  # type: ignore[arg-type]
    if kind == "unet":
        defaults: dict[str, object] = {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 3,
            "channels": (8, 16, 32, 64),
            "strides": (2, 2, 2),
            "num_res_units": 1,
            "norm": "BATCH",
        }
        defaults.update(kwargs)
        return UNet(**defaults)  # type: ignore[arg-type]
    raise ValueError(f"unknown network {kind!r}; known: map_classifier, unet")
