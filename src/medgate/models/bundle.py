"""Model bundles: a MONAI-bundle directory plus medgate's extra metadata.

Layout (MONAI bundle specification)::

    <name>/configs/metadata.json   MONAI fields + metadata["medgate"] (this module's MedgateSpec)
    <name>/models/model.onnx       ONNX, dynamic batch axis (preferred backend)
    <name>/models/model.ts         TorchScript (optional; used when there is no ONNX file)
    <name>/models/model.pt         state dict of a MONAI config's ``network_def``
    <name>/configs/inference.json  MONAI's own inference config (run by models/monai_bundle.py,
                                   only once the operator approved it: models/approval.py)
    <name>/docs/README.md          model card (optional)

A plain MONAI bundle without ``metadata["medgate"]`` loads too: its ``network_data_format`` gives
the input size, the output channels and their names (``spec_from_network_data_format``). The
pipeline never hard-codes a model: labels, codes, thresholds, measurements and preprocessing all
come from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from medgate.core.checksums import sha256_file
from medgate.core.uids import derived_uid
from medgate.models.approval import Decision, inference_config
from medgate.models.findings import Code, Finding, ModelResult, Segment

METADATA_FILE = Path("configs") / "metadata.json"
MODEL_FILES = {"onnx": Path("models") / "model.onnx", "torchscript": Path("models") / "model.ts"}
STATE_DICT_FILE = Path("models") / "model.pt"  # weights of a MONAI config's network_def
DEMO_WARNING = "Demo weights trained on synthetic phantoms, not for clinical use."
MONAI_REQUIRED = ("version", "monai_version", "pytorch_version", "network_data_format")

Task = Literal["classification", "segmentation", "detection", "triage", "tabular"]
SEGMENT_CATEGORY_DEFAULT = Code(value="91723000", scheme="SCT", meaning="Anatomical Structure")


class BundleError(ValueError):
    """A bundle that cannot be used; the message says why in one line."""


class OutputLabel(BaseModel):
    """One model output: a finding (classification) or a segment (segmentation label value)."""

    name: str
    index: int = Field(ge=0, description="output channel (classification) / label value (seg)")
    code: Code
    finding_site: Code | None = None
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    category: Code | None = Field(default=None, description="SEG segmented property category")
    description: dict[str, str] = Field(default_factory=dict, description="lang -> plain text")

    def finding(self, probability: float, **details: Any) -> Finding:
        """This label's finding at ``probability`` (clipped to [0, 1]), present at or above the
        bundle's threshold unless ``details`` says otherwise: every predictor makes its
        present/absent call the same way."""
        p = min(max(float(probability), 0.0), 1.0)
        fields: dict[str, Any] = {"present": p >= self.threshold, **details}
        return Finding(
            label=self.name,
            finding_type=self.code,
            finding_site=self.finding_site,
            probability=p,
            threshold=self.threshold,
            **fields,
        )

    def segment(self, number: int) -> Segment:
        """This label as segment ``number`` of a SEG (anatomical structure when uncategorised)."""
        return Segment(
            number=number,
            label=self.name,
            category=self.category or SEGMENT_CATEGORY_DEFAULT,
            type=self.code,
            finding_site=self.finding_site,
        )


class MeasurementDef(BaseModel):
    """A measurement the bundle reports, with its UCUM unit and how it is computed."""

    name: str
    code: Code
    unit: Code
    method: str = Field(description="e.g. 'cardiothoracic_ratio' (known to the predictor)")
    finding_site: Code | None = None
    label: str | None = Field(
        default=None, description="the output label the measurement belongs to"
    )
    reference_range: tuple[float, float] | None = None


class TransformSpec(BaseModel):
    """One MONAI transform: ``name`` in ``monai.transforms`` and its keyword arguments."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class Preprocessing(BaseModel):
    """How a study becomes the network input."""

    input_kind: Literal["radiograph", "volume", "features"] = "radiograph"
    spatial_size: list[int] = Field(default_factory=lambda: [128, 128])
    transforms: list[TransformSpec] = Field(default_factory=list)
    features: list[str] = Field(
        default_factory=list, description="feature names, in input order, for input_kind=features"
    )


class Postprocessing(BaseModel):
    """How network outputs become probabilities / label masks."""

    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    output: str | None = Field(
        default=None, description="name of the ONNX output holding the scores"
    )
    heatmap_output: str | None = Field(default=None, description="ONNX output with per-label maps")


class Routing(BaseModel):
    """Hints for the router: which studies this bundle is meant for."""

    modalities: list[str] = Field(default_factory=list)
    body_parts: list[str] = Field(default_factory=list)
    sop_class_uids: list[str] = Field(default_factory=list)
    min_slices: int | None = None
    max_slices: int | None = None


class MedgateSpec(BaseModel):
    """``metadata["medgate"]``: what the gateway needs beyond the MONAI fields."""

    name: str | None = None
    task: Task
    labels: list[OutputLabel]
    measurements: list[MeasurementDef] = Field(default_factory=list)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    postprocessing: Postprocessing = Field(default_factory=Postprocessing)
    routing: Routing = Field(default_factory=Routing)
    device_uid: str | None = None
    checksums: dict[str, str] = Field(default_factory=dict, description="file -> sha256")
    demo: bool = False
    warning: str | None = None
    manufacturer: str = "medgate"
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(
        default_factory=dict, description="how to regenerate the held-out set of `metrics`"
    )
    onnx_opset: int | None = None
    max_batch_size: int | None = Field(
        None, ge=1, description="largest batch the serving layer may send (default: config)"
    )
    extra: dict[str, Any] = Field(default_factory=dict)


def device_uid_for(sha256_hex: str) -> str:
    """The DICOM UID identifying a trained model: derived from its weights' sha256 (2.25 root)."""
    return derived_uid("medgate-model", sha256_hex)


def _generic_code(name: str) -> Code:
    return Code(value=name, scheme="99MEDGATE", meaning=name.replace("_", " "))


def spec_from_network_data_format(metadata: dict[str, Any], name: str) -> MedgateSpec:
    """A MedgateSpec for a standard MONAI bundle, from ``network_data_format`` alone.

    Output channel names come from ``outputs.pred.channel_def``; the task from the output
    ``format`` ("segmentation" -> segmentation, else classification). Codes are local
    (``99MEDGATE``) because a plain MONAI bundle carries none.
    """
    ndf = metadata.get("network_data_format") or {}
    try:
        inp = next(iter(ndf["inputs"].values()))
        out = next(iter(ndf["outputs"].values()))
    except (KeyError, StopIteration, AttributeError) as exc:
        raise BundleError("network_data_format needs one input and one output") from exc
    out_format = str(out.get("format", "")).lower()
    task: Task = "segmentation" if "segment" in out_format else "classification"
    channels = out.get("channel_def") or {}
    count = int(out.get("num_channels", len(channels) or 1))
    names = {int(k): str(v) for k, v in channels.items()} if channels else {}
    labels = []
    for index in range(count):
        label = names.get(index, f"output_{index}")
        if task == "segmentation" and (index == 0 or label.lower() == "background"):
            continue
        labels.append(OutputLabel(name=label, index=index, code=_generic_code(label)))
    shape = [int(s) for s in inp.get("spatial_shape", [])]
    if not shape or any(s <= 0 for s in shape):
        raise BundleError("network_data_format input spatial_shape must list positive sizes")
    value_range = inp.get("value_range") or [0, 1]
    transforms = [
        TransformSpec(
            name="ScaleIntensity",
            args={"minv": float(value_range[0]), "maxv": float(value_range[-1])},
        ),
        TransformSpec(name="Resize", args={"spatial_size": shape, "mode": "area"}),
    ]
    return MedgateSpec(
        name=name,
        task=task,
        labels=labels,
        preprocessing=Preprocessing(
            input_kind="volume" if len(shape) == 3 else "radiograph",
            spatial_size=shape,
            transforms=transforms,
        ),
        postprocessing=Postprocessing(
            activation="softmax" if task == "segmentation" else "sigmoid"
        ),
    )


class Bundle:
    """A loaded, validated bundle directory. Construct with ``Bundle.load(path)``."""

    def __init__(self, path: Path, metadata: dict[str, Any], spec: MedgateSpec) -> None:
        self.path = path
        self.metadata = metadata
        self.spec = spec
        # Set by the registry from models.trusted; None where nobody asked (no config at hand).
        self.approval: Decision | None = None

    @property
    def inference_config(self) -> Path | None:
        """``configs/inference.json`` (or .yaml): the bundle runs as MONAI runs it."""
        return inference_config(self.path)

    @property
    def name(self) -> str:
        return self.spec.name or self.path.name

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "0"))

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def description(self) -> str:
        return str(self.metadata.get("description", ""))

    @property
    def demo(self) -> bool:
        return self.spec.demo

    @property
    def warning(self) -> str | None:
        return self.spec.warning or (DEMO_WARNING if self.spec.demo else None)

    @property
    def has_medgate_keys(self) -> bool:
        return "medgate" in self.metadata

    @property
    def model_files(self) -> dict[str, Path]:
        """Backend name -> existing model file (``onnx`` first when both exist); ``pytorch``
        (a state dict) counts only for a bundle with its own inference config."""
        files = {
            k: self.path / rel for k, rel in MODEL_FILES.items() if (self.path / rel).is_file()
        }
        if self.inference_config is not None and (self.path / STATE_DICT_FILE).is_file():
            files["pytorch"] = self.path / STATE_DICT_FILE
        return files

    @cached_property
    def model_sha256(self) -> str:
        """sha256 of the preferred model file (ONNX if present, else TorchScript)."""
        return sha256_file(next(iter(self.model_files.values())))

    @property
    def device_uid(self) -> str:
        """The model's UID: recorded in the metadata, else derived from the model file."""
        return self.spec.device_uid or device_uid_for(self.model_sha256)

    def new_result(self, source_sop_instance_uids: Sequence[str]) -> ModelResult:
        """An empty result of this bundle on these source images, for a predictor to fill."""
        return ModelResult(
            bundle_name=self.name,
            bundle_version=self.version,
            task=self.task,
            source_sop_instance_uids=list(source_sop_instance_uids),
            device_uid=self.device_uid,
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description for ``medgate models list`` and the HTTP API."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "description": self.description,
            "labels": [label.name for label in self.spec.labels],
            "measurements": [m.name for m in self.spec.measurements],
            "backends": list(self.model_files),
            "device_uid": self.device_uid,
            "demo": self.demo,
            "warning": self.warning,
            "metrics": self.spec.metrics,
            "routing": self.spec.routing.model_dump(),
            "path": str(self.path),
            "inference_config": self.inference_config is not None,
            "approval": self.approval.state if self.approval else None,
            "trust_entry": self.approval.entry if self.approval and self.approval.entry else None,
        }

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Read and validate a bundle directory; raises ``BundleError`` with the reason."""
        path = Path(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise BundleError(f"no {METADATA_FILE}")
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{METADATA_FILE} is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise BundleError(f"{METADATA_FILE} must hold a JSON object")
        missing = [key for key in MONAI_REQUIRED if key not in metadata]
        if missing:
            raise BundleError(f"metadata.json lacks MONAI field(s): {', '.join(missing)}")
        if "medgate" in metadata:
            try:
                spec = MedgateSpec.model_validate(metadata["medgate"])
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise BundleError(f"metadata.medgate.{where}: {first['msg']}") from exc
        else:
            spec = spec_from_network_data_format(metadata, path.name)
        bundle = cls(path, metadata, spec)
        if not bundle.model_files:
            if bundle.inference_config is None:
                raise BundleError("no models/model.onnx or models/model.ts")
            raise BundleError("no models/model.pt, model.ts or model.onnx for the inference config")
        for rel, expected in spec.checksums.items():
            file = path / rel
            if not file.is_file():
                raise BundleError(f"{rel} listed in checksums is missing")
            actual = sha256_file(file)
            if actual != expected:
                raise BundleError(f"{rel}: sha256 {actual[:12]}... != recorded {expected[:12]}...")
        if spec.device_uid and spec.checksums:
            derived = device_uid_for(bundle.model_sha256)
            if derived != spec.device_uid:
                raise BundleError("device_uid does not match the model file's sha256")
        return bundle

    def __repr__(self) -> str:
        return f"Bundle({self.name!r}, version={self.version!r}, task={self.task!r})"
