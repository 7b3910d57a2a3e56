"""``medgate models check``: a bundle run MONAI's way and medgate's way on one series, compared.

MONAI's way is what ``monai.bundle run`` does with the series folder: the config's own
``LoadImage(d)`` reads the files, then its preprocessing, inferer with the PyTorch network and
postprocessing. Medgate's way is what a model replica does with the same study: the series
read in memory (``series_reader``), the three split steps, the network on ONNX Runtime where
the bundle has an export, and the result as the ``ModelResult`` the pipeline turns into a SEG
or findings. Agreement: Dice for a label map, the largest absolute difference for scores. A data
scientist runs it before asking for approval; it runs the bundle's code, as ``monai.bundle run``
does, so it is meant for bundles one is about to vet, on one's own machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medgate.models.approval import bundle_hash, trust_entry
from medgate.models.bundle import Bundle, BundleError
from medgate.models.bundle_export import dice
from medgate.models.monai_bundle import MonaiBundleRunner
from medgate.models.monai_predictor import MonaiBundlePredictor
from medgate.models.series_reader import mask_to_source_grid


@dataclass(frozen=True)
class CheckReport:
    """How closely the two runs agree, and the entry that would approve the bundle."""

    bundle: str
    task: str
    trust_entry: str
    backend: str  # the network medgate's way ran: "onnx" or "torch"
    dice: float | None  # segmentation
    max_abs_difference: float | None  # classification scores
    foreground_voxels: tuple[int, int] | None  # (MONAI, medgate)

    @property
    def agrees(self) -> bool:
        if self.dice is not None:
            return self.dice >= 0.99
        return self.max_abs_difference is not None and self.max_abs_difference <= 1e-4


def read_series(folder: Path) -> list[pydicom.Dataset]:
    """Every DICOM file in ``folder`` (other files are skipped)."""
    datasets: list[pydicom.Dataset] = []
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            datasets.append(pydicom.dcmread(file))
        except (InvalidDicomError, OSError):
            continue
    if not datasets:
        raise BundleError(f"{folder}: no DICOM files")
    return datasets


def check_bundle(bundle_path: Path, series_dir: Path, device: str = "cpu") -> CheckReport:
    """Run both ways on ``series_dir`` and compare (see the module docstring)."""
    bundle = Bundle.load(bundle_path)
    if bundle.inference_config is None:
        raise BundleError(f"{bundle.name}: no configs/inference.json; nothing to compare")
    datasets = read_series(series_dir)
    reference_runner = MonaiBundleRunner(bundle_path, device, prefer_onnx=False)
    monai_output = reference_runner.run_image(reference_runner.load(str(series_dir)))
    runner = MonaiBundleRunner(bundle_path, device)
    result = MonaiBundlePredictor(bundle, runner).predict(datasets)
    entry = trust_entry(bundle.name, bundle_hash(bundle_path))
    if result.segmentation is not None:
        labels = monai_output[0] if monai_output.shape[0] == 1 else monai_output.argmax(axis=0)
        reference = mask_to_source_grid(np.rint(labels).astype(np.uint8))
        mask = result.segmentation.masks["volume"]
        if mask.shape != reference.shape:
            raise BundleError(f"grids differ: MONAI {reference.shape}, medgate {mask.shape}")
        return CheckReport(
            bundle.name,
            bundle.task,
            entry,
            runner.backend,
            dice(reference, mask),
            None,
            (int((reference > 0).sum()), int((mask > 0).sum())),
        )
    scores = np.array([result.scores[label.name] for label in bundle.spec.labels])
    expected = np.asarray(monai_output, np.float64).reshape(-1)
    indices = [label.index for label in bundle.spec.labels]
    difference = float(np.max(np.abs(scores - expected[indices]))) if indices else 0.0
    return CheckReport(bundle.name, bundle.task, entry, runner.backend, None, difference, None)


__all__ = ["CheckReport", "check_bundle", "read_series"]
