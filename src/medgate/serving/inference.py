"""Running one bundle on one study: the steps shared by the Serve replica and in-process use.

A model call carries the study's Part 10 bytes, not file paths, so that a replica on another Ray
node sees the same input. ``preprocess`` and ``postprocess`` run per study; only ``infer`` is
batched across studies (the replica groups inputs of equal shape, since a CT volume and a
radiograph cannot share a tensor).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medgate.models.findings import ModelResult

if TYPE_CHECKING:
    from medgate.models.backends import Device


class BadInput(ValueError):
    """The caller sent something that is not a usable DICOM study (HTTP 400, not a model error)."""


class Predictor(Protocol):
    bundle: Any

    def preprocess(self, datasets: list[pydicom.Dataset]) -> np.ndarray: ...

    def infer(self, batch: np.ndarray) -> np.ndarray | dict[str, np.ndarray]: ...

    def postprocess(self, output: Any, datasets: list[pydicom.Dataset]) -> ModelResult: ...


def read_datasets(payload: Sequence[bytes]) -> list[pydicom.Dataset]:
    """Parse Part 10 files; a file that is not DICOM raises ``BadInput`` naming its position."""
    if not payload:
        raise BadInput("no DICOM files given")
    datasets: list[pydicom.Dataset] = []
    for number, data in enumerate(payload, start=1):
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except (InvalidDicomError, EOFError, ValueError, TypeError) as exc:
            raise BadInput(f"file {number} is not a DICOM Part 10 file: {exc}") from exc
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise BadInput(f"file {number} has no pixel data")
        datasets.append(ds)
    return datasets


def split_batch(output: np.ndarray | dict[str, np.ndarray], count: int) -> list[Any]:
    """Per-study slices of a batched output (an array or a dict of arrays)."""
    if isinstance(output, dict):
        return [{key: value[i] for key, value in output.items()} for i in range(count)]
    return [output[i] for i in range(count)]


def infer_grouped(
    predictor: Predictor, inputs: Sequence[np.ndarray]
) -> tuple[list[Any], list[int]]:
    """Run ``infer`` once per group of equal-shape inputs; returns outputs and batch sizes used."""
    results: list[Any] = [None] * len(inputs)
    groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for position, array in enumerate(inputs):
        groups.setdefault((tuple(array.shape), str(array.dtype)), []).append(position)
    sizes: list[int] = []
    for positions in groups.values():
        batch = np.stack([inputs[p] for p in positions])
        outputs = split_batch(predictor.infer(batch), len(positions))
        for position, output in zip(positions, outputs, strict=True):
            results[position] = output
        sizes.append(len(positions))
    return results, sizes


def predict_local(predictor: Predictor, payload: Sequence[bytes]) -> ModelResult:
    """One study through one predictor in this process (batch of one)."""
    datasets = read_datasets(payload)
    array = predictor.preprocess(datasets)
    outputs, _ = infer_grouped(predictor, [array])
    return predictor.postprocess(outputs[0], datasets)


def resolve_device(requested: str) -> str:
    """``auto`` becomes ``cuda`` only when this process sees a GPU *and* a CUDA-capable backend."""
    if requested != "auto":
        return requested
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "cuda"
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:
        pass
    return "cpu"


def load_predictor(bundle: Any, device: str) -> Predictor:
    """The models package's loader: the bundle's MONAI config where it has one (approved),
    else ONNX Runtime / TorchScript."""
    from medgate.models.predictor import open_predictor

    return open_predictor(bundle, device=cast("Device", device))
