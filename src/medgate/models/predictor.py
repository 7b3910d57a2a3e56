"""The predictor: what a model deployment calls. Study in, ``ModelResult`` out.

The three steps are separate so that the serving layer can batch the middle one across studies:

    x = predictor.preprocess(datasets)            # one study -> one input, no batch axis
    out = predictor.infer(np.stack([x1, x2, ...]))  # batched forward pass (ONNX Runtime)
    result = predictor.postprocess(predictor.split(out, i), datasets_i)

``predict(datasets)`` does all three for one study. Everything model-specific (transforms, labels,
codes, thresholds, measurements) comes from the bundle's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medgate.models.backends import Backend, Device, open_backend
from medgate.models.bundle import Bundle, BundleError, MedgateSpec
from medgate.models.findings import Measurement, ModelResult, SegmentationOutput
from medgate.models.images import ImageGeometry, read_radiograph, read_volume
from medgate.models.measure import measure
from medgate.models.transforms import activate, build_transform, resize_scores


class Predictor:
    """A loaded bundle ready for inference (thread-safe for ``infer`` with ONNX Runtime)."""

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend
        spec = bundle.spec
        self._transform = build_transform(spec.preprocessing.transforms)
        self._input_kind = spec.preprocessing.input_kind
        if self._input_kind == "features":
            raise ValueError(f"{bundle.name}: a features bundle has no image predictor")

    # -- step 1 -------------------------------------------------------------------------------
    def read(self, datasets: Sequence[Dataset]) -> tuple[np.ndarray, ImageGeometry]:
        """The study's image (radiograph) or volume, with its geometry."""
        if self._input_kind == "volume":
            return read_volume(datasets)
        return read_radiograph(datasets)

    def preprocess(self, datasets: Sequence[Dataset]) -> np.ndarray:
        """One model input for one study: (1, H, W) for a radiograph, (1, D, H, W) for a volume."""
        image, _ = self.read(datasets)
        return self._transform(image[None])

    def preprocess_array(self, image: np.ndarray) -> np.ndarray:
        """The same preprocessing for an already decoded image (training uses this)."""
        return self._transform(np.asarray(image, np.float32)[None])

    # -- step 2 -------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Forward pass on stacked inputs (leading batch axis); named outputs, batch first."""
        batch = np.asarray(batch, np.float32)
        expected = 1 + len(self.bundle.spec.preprocessing.spatial_size) + 1
        if batch.ndim != expected:
            raise ValueError(
                f"{self.bundle.name}: batch must have {expected} dims (N, C, *spatial), "
                f"got shape {batch.shape}"
            )
        return self.backend.run(batch)

    @staticmethod
    def split(outputs: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        """The outputs of one study out of a batched result."""
        return {name: value[index] for name, value in outputs.items()}

    # -- step 3 -------------------------------------------------------------------------------
    def postprocess(
        self, output: dict[str, np.ndarray] | np.ndarray, datasets: Sequence[Dataset]
    ) -> ModelResult:
        """Findings / measurements / masks on the source grid for one study's output."""
        if isinstance(output, np.ndarray):
            names = self.backend.output_names
            output = {names[0] if names else "output": output}
        _, geometry = self.read(datasets)
        result = self.bundle.new_result(geometry.sop_instance_uids)
        if self.bundle.spec.extra.get("postprocess") == "nodules":
            self._nodules(output, geometry, datasets, result)
        elif self.bundle.task == "segmentation":
            self._segmentation(output, geometry, result)
        else:
            self._classification(output, geometry, result)
        return result

    def predict(self, datasets: Sequence[Dataset]) -> ModelResult:
        """Preprocess, infer and postprocess one study."""
        x = self.preprocess(datasets)
        outputs = self.infer(x[None])
        return self.postprocess(self.split(outputs, 0), datasets)

    # -- helpers ------------------------------------------------------------------------------
    def _scores(self, output: dict[str, np.ndarray]) -> np.ndarray:
        name = self.bundle.spec.postprocessing.output
        if name and name in output:
            return output[name]
        return next(iter(output.values()))

    def _classification(
        self, output: dict[str, np.ndarray], geometry: ImageGeometry, result: ModelResult
    ) -> None:
        spec = self.bundle.spec
        probs = activate(self._scores(output).reshape(-1), spec.postprocessing.activation)
        result.findings.extend(label.finding(probs[label.index]) for label in spec.labels)
        heat_name = spec.postprocessing.heatmap_output
        if heat_name and heat_name in output and not geometry.is_volume:
            maps = activate(output[heat_name], "sigmoid")
            present = [
                lab.index for lab, f in zip(spec.labels, result.findings, strict=True) if f.present
            ]
            chosen = maps[present] if present else maps
            heat = resize_scores(chosen.max(axis=0, keepdims=True), geometry.shape)[0]
            result.heatmaps[geometry.sop_instance_uids[0]] = np.clip(heat, 0, 1).astype(np.float32)

    def _nodules(
        self,
        output: dict[str, np.ndarray],
        geometry: ImageGeometry,
        datasets: Sequence[Dataset],
        result: ModelResult,
    ) -> None:
        """Per-nodule findings (``medgate.extra.postprocess == "nodules"``): models/nodules.py."""
        from medgate.models.nodules import VOXEL_THRESHOLD, nodule_result

        spec = self.bundle.spec
        label = spec.labels[0]
        full = resize_scores(self._scores(output), geometry.shape)
        if spec.postprocessing.activation == "softmax":
            prob = activate(full, "softmax")[label.index]
        else:
            prob = activate(full[label.index - 1], "sigmoid")
        nodule_result(
            prob,
            geometry,
            datasets,
            result,
            label,
            voxel_threshold=float(spec.extra.get("voxel_threshold", VOXEL_THRESHOLD)),
            candidate_model=spec.extra.get("candidate_model"),
        )

    def _segmentation(
        self, output: dict[str, np.ndarray], geometry: ImageGeometry, result: ModelResult
    ) -> None:
        spec = self.bundle.spec
        scores = self._scores(output)
        if spec.postprocessing.activation == "sigmoid":
            probs = activate(scores, "sigmoid")
            fg = probs.max(axis=0) >= 0.5
            labels = np.where(fg, probs.argmax(axis=0) + 1, 0)
            full = resize_scores(
                np.stack([(labels == v) for v in range(scores.shape[0] + 1)]), geometry.shape
            )
        else:
            full = resize_scores(scores, geometry.shape)
        mask = full.argmax(axis=0).astype(np.uint8)
        key = "volume" if geometry.is_volume else geometry.sop_instance_uids[0]
        segmentation_result(spec, mask, key, geometry, result)


def segmentation_result(
    spec: MedgateSpec, mask: np.ndarray, key: str, geometry: ImageGeometry, result: ModelResult
) -> None:
    """Fill ``result`` from a label mask on the source grid: the SEG's segments (one per bundle
    label) and the bundle's declared measurements on that mask. Every segmentation predictor
    ends here, so a mask means the same whatever ran the network."""
    result.segmentation = SegmentationOutput(
        segments=[label.segment(label.index) for label in spec.labels],
        masks={key: mask},
        frame_sop_instance_uids=list(geometry.frame_sop_instance_uids),
    )
    values = {label.name: label.index for label in spec.labels}
    for definition in spec.measurements:
        value = measure(definition.method, mask, values, geometry.spacing, definition.label)
        result.measurements.append(
            Measurement(
                name=definition.code,
                value=value,
                unit=definition.unit,
                finding_site=definition.finding_site,
                segment_number=values.get(definition.label) if definition.label else None,
                source_sop_instance_uids=list(geometry.sop_instance_uids),
            )
        )


def open_predictor(bundle: Bundle, device: Device = "cpu") -> Any:
    """The predictor the serving layer runs: the bundle's own MONAI inference config where it
    has one (models/monai_predictor.py, once approved), else ``load_predictor``'s."""
    if bundle.inference_config is None:
        return load_predictor(bundle, device)
    from medgate.models.monai_predictor import load_monai_predictor

    try:
        return load_monai_predictor(bundle, device)
    except BundleError:
        raise
    except Exception as exc:  # the config's own code may raise anything
        raise BundleError(f"{bundle.name}: the MONAI bundle cannot be loaded: {exc}") from exc


def load_predictor(bundle: Bundle | str | Path, device: Device = "cpu") -> Predictor:
    """Open a bundle's model (ONNX Runtime first, TorchScript otherwise) for inference."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    output_names = bundle.spec.extra.get("output_names")
    try:
        backend = open_backend(bundle.model_files, device, output_names=output_names)
    except Exception as exc:  # ONNX Runtime / torch raise many types for unreadable models
        raise BundleError(f"{bundle.name}: the model cannot be loaded: {exc}") from exc
    return Predictor(bundle, backend)
