"""Train the study-triage bundle: upstream model outputs -> priority, a small sklearn model in ONNX.

The features are what the imaging bundles actually say about training studies (not the ground
truth), so the triage model learns how much to trust each upstream output. The target priority
comes from the ground truth: pneumothorax is critical; nodule/mass, effusion and an enlarged heart
are urgent; everything else is routine.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix

from medgate.core.checksums import sha256_file
from medgate.datasets.folder import LabeledStudy
from medgate.models.bundle import (
    DEMO_WARNING,
    METADATA_FILE,
    MODEL_FILES,
    Bundle,
    MedgateSpec,
    OutputLabel,
    Postprocessing,
    Preprocessing,
    device_uid_for,
)
from medgate.models.findings import Code, ModelResult
from medgate.models.triage import PRIORITIES, triage, triage_features
from medgate.training.tabular_format import features_to_probabilities

FEATURES = ["p_nodule", "p_effusion", "p_pneumothorax", "p_cardiomegaly", "m_ctr"]
FEATURE_DEFAULTS = {
    "p_nodule": 0.0,
    "p_effusion": 0.0,
    "p_pneumothorax": 0.0,
    "p_cardiomegaly": 0.0,
    "m_ctr": 0.45,
}


def truth_priority(labels: dict[str, int]) -> int:
    """Ground-truth priority index (0 routine, 1 urgent, 2 critical) of a labelled study."""
    if labels.get("pneumothorax"):
        return 2
    if any(labels.get(name) for name in ("nodule", "effusion", "cardiomegaly")):
        return 1
    return 0


def feature_matrix(results: Sequence[Sequence[ModelResult]]) -> np.ndarray:
    """One feature row per study from its upstream results."""
    return np.concatenate([triage_features(r, FEATURES, FEATURE_DEFAULTS) for r in results])


def _priority_labels() -> list[OutputLabel]:
    meanings = {
        "routine": "Routine priority",
        "urgent": "Urgent priority",
        "critical": "Critical priority",
    }
    return [
        OutputLabel(
            name=name,
            index=i,
            code=Code(value=f"TRIAGE-{name.upper()}", scheme="99MEDGATE", meaning=meanings[name]),
            threshold=0.5,
        )
        for i, name in enumerate(PRIORITIES)
    ]


def triage_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-priority sensitivity, under-triage rate and the confusion matrix."""
    cm = confusion_matrix(truth, predicted, labels=[0, 1, 2])
    sens = {PRIORITIES[i]: float(cm[i, i] / max(cm[i].sum(), 1)) for i in range(3)}
    under = float(np.mean(predicted < truth))
    return {
        "n": len(truth),
        "accuracy": float(np.mean(truth == predicted)),
        "sensitivity": sens,
        "under_triage_rate": under,
        "confusion": cm.tolist(),
    }


def train_triage(
    out_dir: Path,
    train_results: Sequence[Sequence[ModelResult]],
    train_studies: Sequence[LabeledStudy],
    *,
    version: str = "1.0.0",
    upstream: dict[str, str] | None = None,
    demo: bool = True,
) -> Bundle:
    """Fit the triage model and write the bundle to ``out_dir`` (rebuilt from scratch)."""
    x = feature_matrix(train_results)
    y = np.array([truth_priority(s.labels) for s in train_studies])
    model = LogisticRegression(C=3.0, max_iter=2000, class_weight="balanced")
    model.fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "configs").mkdir(parents=True)
    (out_dir / "models").mkdir()
    onnx_path = out_dir / MODEL_FILES["onnx"]
    onnx_path.write_bytes(onx.SerializeToString())
    sha = sha256_file(onnx_path)
    spec = MedgateSpec(
        name="study_triage",
        task="triage",
        labels=_priority_labels(),
        preprocessing=Preprocessing(
            input_kind="features", spatial_size=[len(FEATURES)], features=FEATURES
        ),
        postprocessing=Postprocessing(activation="none", output="probabilities"),
        device_uid=device_uid_for(sha),
        checksums={str(MODEL_FILES["onnx"]): sha},
        demo=demo,
        warning=DEMO_WARNING if demo else None,
        onnx_opset=17,
        training_data={
            "source": "outputs of the imaging bundles on synthetic chest radiograph phantoms",
            "train_studies": len(y),
            "class_counts": {PRIORITIES[i]: int((y == i).sum()) for i in range(3)},
            "upstream_bundles": upstream or {},
        },
        extra={"feature_defaults": FEATURE_DEFAULTS, "sklearn_model": "LogisticRegression"},
    )
    metadata: dict[str, Any] = {
        "version": version,
        "changelog": {version: "trained by medgate make_models"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {"scikit-learn": __import__("sklearn").__version__},
        "task": "Study triage: priority from imaging findings",
        "description": "Logistic regression over the chest radiograph bundles' outputs giving "
        "critical / urgent / routine priority with reasons.",
        "authors": "medgate contributors",
        "copyright": f"Copyright (c) {dt.date.today().year} medgate contributors; Apache-2.0",
        "intended_use": "Orders the reading worklist in the medgate demo. Not for clinical use.",
        "references": [],
        "eval_metrics": {},
        "network_data_format": features_to_probabilities(FEATURES, PRIORITIES),
        "medgate": spec.model_dump(mode="json"),
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    return Bundle.load(out_dir)


def evaluate_triage(
    bundle: Bundle, results: Sequence[Sequence[ModelResult]], studies: Sequence[LabeledStudy]
) -> dict[str, Any]:
    """Held-out triage metrics of ``bundle`` (through ``medgate.models.triage.triage``)."""
    truth = np.array([truth_priority(s.labels) for s in studies])
    predicted = np.array([PRIORITIES.index(triage(r, bundle).priority) for r in results])
    return triage_metrics(truth, predicted)
