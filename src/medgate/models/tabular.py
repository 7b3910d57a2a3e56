"""Serve the demo tabular risk bundle with ONNX Runtime, with per-patient reason codes.

The bundle is read directly from ``models.path/<name>`` (configs/metadata.json +
models/model.onnx); the ONNX file's SHA-256 is checked against the metadata so that a swapped
file is refused rather than silently served.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from medgate.models.bundle import BundleError

DEFAULT_BUNDLE = "cds_diabetes_risk"


class ReasonCode(BaseModel):
    feature: str
    value: float
    unit: str
    contribution_log_odds: float
    direction: str


class ModelInfo(BaseModel):
    name: str
    version: str
    onnx_sha256: str
    intended_use: str
    demo_not_for_clinical_use: bool


class ModelPrediction(BaseModel):
    probability: float
    label: str
    reasons: list[ReasonCode]
    model: ModelInfo


class TabularPredictor:
    """One ONNX Runtime session (single-threaded: requests are tiny) for one bundle."""

    def __init__(self, bundle_dir: Path) -> None:
        import onnxruntime as ort

        meta_path = bundle_dir / "configs" / "metadata.json"
        onnx_path = bundle_dir / "models" / "model.onnx"
        if not meta_path.is_file() or not onnx_path.is_file():
            raise BundleError(f"bundle {bundle_dir.name!r} not found under {bundle_dir.parent}")
        self.metadata: dict[str, Any] = json.loads(meta_path.read_text())
        data = onnx_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.metadata["onnx"]["sha256"]:
            raise BundleError(f"bundle {bundle_dir.name!r}: model.onnx does not match metadata")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.inputs: list[dict[str, str]] = self.metadata["inputs"]
        self.names = [item["name"] for item in self.inputs]
        explain = self.metadata["explain"]
        self._mean = np.asarray(explain["mean"])
        self._scale = np.asarray(explain["scale"])
        self._coef = np.asarray(explain["coef"])
        self._lock = threading.Lock()
        self.info = ModelInfo(
            name=self.metadata["name"],
            version=self.metadata["version"],
            onnx_sha256=self.metadata["onnx"]["sha256"],
            intended_use=self.metadata["intended_use"],
            demo_not_for_clinical_use=bool(self.metadata["demo_not_for_clinical_use"]),
        )

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Probability of the positive label for each row (float32 in, as exported)."""
        feed = {"features": np.asarray(rows, dtype=np.float32).reshape(-1, len(self.names))}
        out = self.session.run(["probabilities"], feed)[0]
        return np.asarray(out)[:, 1]

    def predict(self, values: dict[str, float], top: int = 3) -> ModelPrediction:
        """One patient: probability plus the features that moved the score most."""
        missing = [name for name in self.names if name not in values]
        if missing:
            raise ValueError(f"missing model inputs: {', '.join(missing)}")
        row = np.array([float(values[name]) for name in self.names])
        probability = float(self.predict_proba(row[None, :])[0])
        contributions = self._coef * (row - self._mean) / self._scale
        order = np.argsort(-np.abs(contributions))[:top]
        reasons = [
            ReasonCode(
                feature=self.names[i],
                value=float(row[i]),
                unit=self.inputs[i]["unit"],
                contribution_log_odds=round(float(contributions[i]), 4),
                direction="raises risk" if contributions[i] > 0 else "lowers risk",
            )
            for i in order
        ]
        return ModelPrediction(
            probability=round(probability, 4),
            label=self.metadata["label"]["name"],
            reasons=reasons,
            model=self.info,
        )


@lru_cache(maxsize=8)
def load_predictor(models_path: str, name: str = DEFAULT_BUNDLE) -> TabularPredictor:
    """The predictor for ``models_path/name``, loaded once per process."""
    return TabularPredictor(Path(models_path) / name)
