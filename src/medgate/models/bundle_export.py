"""ONNX export of a MONAI-config bundle's network, with parity checked before it is kept.

ONNX Runtime is medgate's default backend (fast on CPU, CUDA where present). A zoo bundle ships
PyTorch weights for its ``network_def``; ``medgate export-bundle --onnx`` traces that network
on a sample input (the inferer's ROI, or a study's preprocessed image), compares ONNX Runtime's
output with PyTorch's on it (and, given a series, the whole config run both ways), and writes
``models/model.onnx`` only when they agree. The runner then drives the ONNX network through the
config's own inferer. The file changes the bundle's hash: the operator approves it again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medgate.models.bundle import BundleError
from medgate.models.monai_bundle import MonaiBundleRunner, OnnxNetwork
from medgate.models.series_reader import series_metatensor

PARITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely ONNX Runtime follows PyTorch."""

    path: Path
    input_shape: tuple[int, ...]
    max_abs_difference: float  # network outputs on the sample input
    series_agreement: float | None  # Dice (segmentation) or 1 - max abs diff, whole config run


def _sample_input(runner: MonaiBundleRunner, series: Sequence[Dataset] | None) -> Any:
    import torch

    roi = getattr(runner.inferer, "roi_size", None)
    if series:
        image, _ = runner.preprocess(series)
        sample = torch.as_tensor(image.detach().cpu().numpy())[None]
        if roi is not None:  # one window of what the sliding window will feed the network
            pads = []
            for size, want in zip(reversed(sample.shape[2:]), reversed(list(roi)), strict=True):
                pads += [0, max(0, int(want) - int(size))]
            sample = torch.nn.functional.pad(sample, pads)
            sample = sample[(slice(None), slice(None), *(slice(0, int(r)) for r in roi))]
        return sample.float()
    shape = [int(r) for r in roi] if roi is not None else [64, 64, 64]
    generator = torch.Generator().manual_seed(0)
    return torch.rand((1, 1, *shape), generator=generator)


def export_onnx(
    bundle_path: Path,
    series: Sequence[Dataset] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = 17,
) -> ExportReport:
    """Write ``models/model.onnx`` for the bundle's network if ONNX Runtime agrees with PyTorch
    within ``tolerance``; raises ``BundleError`` (nothing written) otherwise."""
    import torch

    runner = MonaiBundleRunner(bundle_path, "cpu", prefer_onnx=False)
    network = runner.network
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"{bundle_path.name}: the network is not a torch module")
    sample = _sample_input(runner, series)
    spatial = {i: f"d{i}" for i in range(2, sample.ndim)}
    target = bundle_path / "models" / "model.onnx"
    with tempfile.TemporaryDirectory() as scratch:
        candidate = Path(scratch) / "model.onnx"
        try:
            torch.onnx.export(
                network,
                (sample,),
                str(candidate),
                input_names=["image"],
                output_names=["pred"],
                dynamic_axes={"image": {0: "batch", **spatial}, "pred": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        except Exception as exc:  # torch raises many types for networks it cannot trace
            raise BundleError(f"{bundle_path.name}: the network does not export: {exc}") from exc
        with torch.inference_mode():
            expected = network(sample).detach().cpu().numpy()
        got = OnnxNetwork(candidate, "cpu")(sample).numpy()
        if got.shape != expected.shape:
            raise BundleError(f"ONNX output shape {got.shape} != PyTorch {expected.shape}")
        difference = float(np.max(np.abs(got - expected)))
        if difference > tolerance:
            raise BundleError(
                f"{bundle_path.name}: ONNX Runtime differs from PyTorch by {difference:.2e} "
                f"(> {tolerance:.0e}); not written"
            )
        agreement = None
        if series:
            image, _ = series_metatensor(series)
            reference = runner.run_image(image)
            runner.network = OnnxNetwork(candidate, "cpu")
            agreement = agreement_score(reference, runner.run_image(image), _is_mask(runner))
        shutil.copyfile(candidate, target)  # across file systems; the scratch dir goes
    return ExportReport(target, tuple(sample.shape), difference, agreement)


def _is_mask(runner: MonaiBundleRunner) -> bool:
    from monai.transforms import AsDiscreted

    post = runner.postprocessing
    return post is not None and any(isinstance(t, AsDiscreted) for t in post.transforms)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of the foregrounds (label > 0); 1.0 when both are empty."""
    fa, fb = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(fa.sum() + fb.sum())
    return 1.0 if total == 0 else float(2 * (fa & fb).sum() / total)


def agreement_score(a: np.ndarray, b: np.ndarray, is_mask: bool) -> float:
    """Dice for label maps, else 1 - the largest absolute difference."""
    if np.shape(a) != np.shape(b):
        return 0.0
    if is_mask:
        return dice(a, b)
    return 1.0 - float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))))


__all__ = ["ExportReport", "agreement_score", "dice", "export_onnx"]
