"""The predictor of a bundle that runs its own MONAI inference config.

Same three steps as ``models.predictor.Predictor`` (the serving layer cannot tell them apart):
``preprocess`` gives a numpy array per study, ``infer`` runs a stacked batch, ``postprocess``
turns one output into a ``ModelResult``. ``Invertd`` needs the preprocessed image's trace, which
an array loses: the preprocessed MetaTensor is kept by the study's SOP Instance UIDs until its
output is postprocessed (a miss, e.g. a restarted replica, preprocesses again).

Outputs: a segmentation's label map (on the source grid after ``Invertd``) becomes the SEG
masks with segments from ``channel_def`` (or the medgate labels); a classification's
probabilities become findings with present/absent calls when the bundle has medgate keys with
thresholds, otherwise plain scores (``ModelResult.scores``) with no call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medgate.models.bundle import Bundle, BundleError
from medgate.models.findings import ModelResult
from medgate.models.images import ImageGeometry
from medgate.models.monai_bundle import MonaiBundleRunner
from medgate.models.predictor import segmentation_result
from medgate.models.series_reader import mask_to_source_grid

KEEP_PREPROCESSED = 32


class MonaiBundlePredictor:
    """A loaded MONAI-config bundle (``load_predictor`` builds it for an approved bundle)."""

    def __init__(self, bundle: Bundle, runner: MonaiBundleRunner) -> None:
        self.bundle = bundle
        self.runner = runner
        self._kept: OrderedDict[tuple[str, ...], tuple[Any, ImageGeometry]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(datasets: Sequence[Dataset]) -> tuple[str, ...]:
        return tuple(sorted(str(ds.get("SOPInstanceUID", "")) for ds in datasets))

    def _prepared(self, datasets: Sequence[Dataset]) -> tuple[Any, ImageGeometry]:
        image, geometry = self.runner.preprocess(datasets)
        with self._lock:
            self._kept[self._key(datasets)] = (image, geometry)
            while len(self._kept) > KEEP_PREPROCESSED:
                self._kept.popitem(last=False)
        return image, geometry

    def preprocess(self, datasets: Sequence[Dataset]) -> np.ndarray:
        """One study -> its preprocessed (C, *spatial) array, kept for ``postprocess``."""
        image, _ = self._prepared(datasets)
        return np.asarray(image.detach().cpu().numpy(), np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The config's inferer over a batch of preprocessed studies (equal shapes)."""
        return np.asarray(self.runner.forward(batch).numpy())

    def postprocess(self, output: Any, datasets: Sequence[Dataset]) -> ModelResult:
        """One study's output through the config's postprocessing, then into a ModelResult."""
        if isinstance(output, dict):
            output = next(iter(output.values()))
        with self._lock:
            kept = self._kept.pop(self._key(datasets), None)
        image, geometry = kept if kept is not None else self.runner.preprocess(datasets)
        prediction = self.runner.postprocess(image, np.asarray(output))
        result = self.bundle.new_result(geometry.sop_instance_uids)
        if self.bundle.task == "segmentation":
            self._segmentation(prediction, geometry, result)
        else:
            self._classification(prediction, result)
        return result

    def predict(self, datasets: Sequence[Dataset]) -> ModelResult:
        x = self.preprocess(datasets)
        return self.postprocess(self.infer(x[None])[0], datasets)

    def _segmentation(
        self, prediction: np.ndarray, geometry: ImageGeometry, result: ModelResult
    ) -> None:
        spec = self.bundle.spec
        labels = prediction[0] if prediction.shape[0] == 1 else prediction.argmax(axis=0)
        mask = mask_to_source_grid(np.rint(labels).astype(np.uint8))
        if mask.shape != tuple(geometry.shape):
            raise BundleError(
                f"{self.bundle.name}: postprocessed mask {mask.shape} is not on the source grid "
                f"{tuple(geometry.shape)}; the config needs Invertd back to the image"
            )
        segmentation_result(spec, mask, "volume", geometry, result)

    def _classification(self, prediction: np.ndarray, result: ModelResult) -> None:
        probabilities = np.asarray(prediction, np.float64).reshape(-1)
        for label in self.bundle.spec.labels:
            if label.index >= probabilities.size:
                raise BundleError(
                    f"{self.bundle.name}: label {label.name!r} reads channel {label.index} of "
                    f"{probabilities.size}"
                )
            p = float(np.clip(probabilities[label.index], 0.0, 1.0))
            result.scores[label.name] = p
            if self.bundle.has_medgate_keys:  # the thresholds are the bundle author's call
                result.findings.append(label.finding(p))


def load_monai_predictor(bundle: Bundle, device: str = "cpu") -> MonaiBundlePredictor:
    """Parse an approved bundle's config and load its network (hash checked again here)."""
    approval = bundle.approval
    if approval is None or approval.state != "approved":
        state = approval.state if approval else "not checked against models.trusted"
        raise BundleError(f"{bundle.name}: its inference config is not approved ({state})")
    expected = approval.entry.rsplit("@", 1)[1]
    runner = MonaiBundleRunner(bundle.path, device, expected_hash=expected)
    return MonaiBundlePredictor(bundle, runner)
