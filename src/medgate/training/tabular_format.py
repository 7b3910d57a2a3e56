"""The MONAI ``network_data_format`` of a tabular model: a feature vector in, class
probabilities out. The CDS risk model and the study triage model both are such models, and the
gateway reads the channel names from here to label their inputs and outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def features_to_probabilities(features: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """``network_data_format`` for ``len(features)`` float inputs and one probability per class."""
    return {
        "inputs": {
            "features": {
                "type": "features",
                "format": "float",
                "num_channels": 1,
                "spatial_shape": [len(features)],
                "dtype": "float32",
                "value_range": [],
                "channel_def": {str(i): name for i, name in enumerate(features)},
            }
        },
        "outputs": {
            "probabilities": {
                "type": "probabilities",
                "format": "classification",
                "num_channels": len(classes),
                "spatial_shape": [len(classes)],
                "dtype": "float32",
                "value_range": [0, 1],
                "channel_def": {str(i): name for i, name in enumerate(classes)},
            }
        },
    }
