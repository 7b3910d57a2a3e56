"""Train the demo tabular risk model that the decision-support API serves (task = "tabular").

Data: scikit-learn's diabetes data set loaded unscaled (442 patients with diabetes; ten baseline
variables; a quantitative measure of disease progression one year later). The label is "high
disease progression" = target above ``data.target_threshold``. Every row is one patient: the split
is by patient ID (train / calibration / held-out test, stratified), so no patient is in two sets.

Model: standardisation + L2 logistic regression, recalibrated with Platt scaling on the
calibration split. Platt scaling of a logistic regression is again a logistic regression, so the
calibrated model is folded into one pipeline, exported with skl2onnx and served with ONNX Runtime;
its standardised coefficients also give per-patient reason codes. The bundle is labelled a demo,
not for clinical use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

BUNDLE_VERSION = "1.0.0"
INTENDED_USE = (
    "DEMONSTRATION ONLY - NOT FOR CLINICAL USE. Shows how a learned tabular risk model is trained, "
    "calibrated, exported and served next to guideline calculators."
)

# The data set's column -> (name in the API, unit, meaning)
FEATURES: dict[str, tuple[str, str, str]] = {
    "age": ("age", "a", "age in years"),
    "sex": ("sex_code", "1", "sex as coded 1/2 in the data set (meaning not documented)"),
    "bmi": ("bmi", "kg/m2", "body mass index"),
    "bp": ("mean_arterial_pressure_mmhg", "mm[Hg]", "average blood pressure"),
    "s1": ("total_cholesterol_mg_dl", "mg/dL", "total serum cholesterol"),
    "s2": ("ldl_cholesterol_mg_dl", "mg/dL", "low-density lipoproteins"),
    "s3": ("hdl_cholesterol_mg_dl", "mg/dL", "high-density lipoproteins"),
    "s4": ("tc_hdl_ratio", "1", "total cholesterol / HDL"),
    "s5": ("ln_triglycerides_mg_dl", "1", "natural log of serum triglycerides (mg/dL)"),
    "s6": ("glucose_mg_dl", "mg/dL", "blood sugar level"),
}
DEFAULTS: dict[str, Any] = {
    "name": "cds_diabetes_risk",
    "data": {
        "source": "sklearn:diabetes",
        "target_threshold": 200.0,
        "features": ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
        "test_fraction": 0.25,
        "calibration_fraction": 0.2,
        "seed": 20240607,
    },
    "model": {"C": 1.0, "max_iter": 1000},
    "calibration": {"bins": 5},
}


@dataclass
class TabularFit:
    """Everything a training run produced, before it is written as a bundle."""

    config: dict[str, Any]
    pipeline: Pipeline
    features: list[str]
    x: np.ndarray
    y: np.ndarray
    patient_ids: np.ndarray
    train_ids: np.ndarray
    calibration_ids: np.ndarray
    test_ids: np.ndarray
    metrics: dict[str, float]


def merged_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the given config (one level of nesting)."""
    merged: dict[str, Any] = {}
    for key, value in DEFAULTS.items():
        merged[key] = dict(value) if isinstance(value, dict) else value
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    unknown = set(merged["data"]["features"]) - set(FEATURES)
    if unknown:
        raise ValueError(f"data.features: unknown columns {sorted(unknown)}; use {list(FEATURES)}")
    if merged["data"]["source"] != "sklearn:diabetes":
        raise ValueError("data.source: only 'sklearn:diabetes' is supported")
    return merged


def load_data(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Unscaled features, binary label and a patient ID per row."""
    data = load_diabetes(scaled=False)
    names = list(data.feature_names)
    features = list(config["data"]["features"])
    x = data.data[:, [names.index(f) for f in features]].astype(np.float64)
    y = (data.target > float(config["data"]["target_threshold"])).astype(np.int64)
    ids = np.array([f"P{i:04d}" for i in range(len(y))])
    return x, y, ids, features


def split_patients(
    ids: np.ndarray, y: np.ndarray, config: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified patient-level split into train, calibration and test IDs."""
    seed = int(config["data"]["seed"])
    rest, test = train_test_split(
        ids, test_size=config["data"]["test_fraction"], stratify=y, random_state=seed
    )
    index = {pid: i for i, pid in enumerate(ids)}
    rest_y = y[[index[p] for p in rest]]
    train, calibration = train_test_split(
        rest,
        test_size=config["data"]["calibration_fraction"],
        stratify=rest_y,
        random_state=seed + 1,
    )
    return np.sort(train), np.sort(calibration), np.sort(test)


def _rows(ids: np.ndarray, selected: np.ndarray) -> np.ndarray:
    position = {pid: i for i, pid in enumerate(ids)}
    return np.array([position[p] for p in selected])


def fit(config: dict[str, Any]) -> TabularFit:
    """Fit, Platt-calibrate and evaluate; returns the calibrated single pipeline."""
    config = merged_config(config)
    x, y, ids, features = load_data(config)
    train_ids, calibration_ids, test_ids = split_patients(ids, y, config)
    tr, ca, te = _rows(ids, train_ids), _rows(ids, calibration_ids), _rows(ids, test_ids)
    scaler = StandardScaler().fit(x[tr])
    base = LogisticRegression(
        C=float(config["model"]["C"]), max_iter=int(config["model"]["max_iter"])
    ).fit(scaler.transform(x[tr]), y[tr])
    # Platt scaling on held-apart patients: p = sigmoid(a * z + c) with z the base log-odds.
    z_cal = base.decision_function(scaler.transform(x[ca])).reshape(-1, 1)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(z_cal, y[ca])
    a, c = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    calibrated = LogisticRegression()
    calibrated.classes_ = base.classes_
    calibrated.coef_ = base.coef_ * a
    calibrated.intercept_ = base.intercept_ * a + c
    calibrated.n_features_in_ = base.n_features_in_
    pipeline = Pipeline([("scale", scaler), ("logit", calibrated)])
    p_test = pipeline.predict_proba(x[te])[:, 1]
    p_base = base.predict_proba(scaler.transform(x[te]))[:, 1]
    metrics = {
        "test_auc": float(roc_auc_score(y[te], p_test)),
        "test_brier": float(brier_score_loss(y[te], p_test)),
        "test_brier_uncalibrated": float(brier_score_loss(y[te], p_base)),
        "test_prevalence": float(y[te].mean()),
        "n_train": len(tr),
        "n_calibration": len(ca),
        "n_test": len(te),
        "platt_a": a,
        "platt_c": c,
    }
    return TabularFit(
        config, pipeline, features, x, y, ids, train_ids, calibration_ids, test_ids, metrics
    )


def export_onnx(pipeline: Pipeline, n_features: int) -> bytes:
    """The pipeline as ONNX: input ``features`` float32 [N, F], output ``probabilities``."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        pipeline,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(pipeline.named_steps["logit"]): {"zipmap": False}},
        target_opset=17,
    )
    return onnx_model.SerializeToString()


def calibration_plot(y: np.ndarray, p: np.ndarray, bins: int, path: Path, title: str) -> None:
    """Reliability diagram plus the score histogram, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    frac_pos, mean_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    top.plot(mean_pred, frac_pos, "o-", label="model (held-out)")
    top.set_ylabel("observed fraction positive")
    top.set_title(title)
    top.legend(loc="upper left")
    bottom.hist(p, bins=20, range=(0, 1), color="tab:blue")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("patients")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_bundle(result: TabularFit, out_dir: Path) -> Path:
    """Write the MONAI-bundle-like directory; returns its path."""
    config = result.config
    bundle = Path(out_dir) / str(config["name"])
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "models").mkdir(parents=True, exist_ok=True)
    (bundle / "docs").mkdir(parents=True, exist_ok=True)
    onnx_bytes = export_onnx(result.pipeline, len(result.features))
    (bundle / "models" / "model.onnx").write_bytes(onnx_bytes)
    te = _rows(result.patient_ids, result.test_ids)
    p_test = result.pipeline.predict_proba(result.x[te])[:, 1]
    calibration_plot(
        result.y[te],
        p_test,
        int(config["calibration"]["bins"]),
        bundle / "docs" / "calibration.png",
        f"{config['name']} calibration (n={len(te)})",
    )
    scaler: StandardScaler = result.pipeline.named_steps["scale"]
    logit: LogisticRegression = result.pipeline.named_steps["logit"]
    threshold = float(config["data"]["target_threshold"])
    metadata = {
        "schema": "medgate-tabular-bundle/1",
        "name": config["name"],
        "version": BUNDLE_VERSION,
        "task": "tabular-binary-risk",
        "intended_use": INTENDED_USE,
        "demo_not_for_clinical_use": True,
        "label": {
            "name": "high_disease_progression",
            "definition": f"disease progression one year after baseline > {threshold:g}",
        },
        "inputs": [
            {
                "column": f,
                "name": FEATURES[f][0],
                "unit": FEATURES[f][1],
                "description": FEATURES[f][2],
            }
            for f in result.features
        ],
        "onnx": {
            "input": "features",
            "output": "probabilities",
            "dtype": "float32",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        },
        "explain": {
            "method": "standardised logistic-regression contributions (log-odds)",
            "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(),
            "coef": logit.coef_[0].tolist(),
            "intercept": float(logit.intercept_[0]),
        },
        "training_data": {
            "source": "scikit-learn load_diabetes(scaled=False); Efron et al., Least Angle "
            "Regression, Annals of Statistics 2004",
            "patients": len(result.y),
            "positives": int(result.y.sum()),
            "split": "stratified by label, by patient ID",
            "seed": int(config["data"]["seed"]),
            "test_patient_ids": result.test_ids.tolist(),
        },
        "metrics": result.metrics,
        "config": config,
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    metadata.update(_monai_fields(result, hashlib.sha256(onnx_bytes).hexdigest()))
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (bundle / "docs" / "README.md").write_text(_model_card(metadata))
    return bundle


def _monai_fields(result: TabularFit, onnx_sha256: str) -> dict[str, Any]:
    """The MONAI bundle fields and medgate's keys, so that the bundle registry lists this bundle
    (``medgate models list``, ``GET /api/v1/models``) like every other; task ``tabular`` keeps it
    out of the imaging deployments."""
    import monai

    from medgate.models.bundle import DEMO_WARNING, device_uid_for
    from medgate.training.tabular_format import features_to_probabilities

    names = [FEATURES[f][0] for f in result.features]
    return {
        "monai_version": monai.__version__,
        "pytorch_version": "n/a (scikit-learn model in ONNX)",
        "description": "Demo risk of high diabetes progression at one year, from baseline "
        "measurements; served by the decision-support API.",
        "network_data_format": features_to_probabilities(
            names, ["low", "high_disease_progression"]
        ),
        "medgate": {
            "name": str(result.config["name"]),
            "task": "tabular",
            "labels": [
                {
                    "name": "high_disease_progression",
                    "index": 1,
                    "code": {
                        "value": "DM-PROGRESSION-HIGH",
                        "scheme": "99MEDGATE",
                        "meaning": "High one-year diabetes progression (demo)",
                    },
                }
            ],
            "preprocessing": {
                "input_kind": "features",
                "spatial_size": [len(names)],
                "features": names,
            },
            "device_uid": device_uid_for(onnx_sha256),
            "checksums": {"models/model.onnx": onnx_sha256},
            "demo": True,
            "warning": DEMO_WARNING.replace("synthetic phantoms", "a public demo data set"),
            "metrics": result.metrics,
        },
    }


def _model_card(meta: dict[str, Any]) -> str:
    m = meta["metrics"]
    lines = [
        f"# Model card: {meta['name']} {meta['version']}",
        "",
        f"**{meta['intended_use']}**",
        "",
        f"- Label: {meta['label']['definition']}",
        f"- Data: {meta['training_data']['source']}; {meta['training_data']['patients']} patients",
        f"- Split: {meta['training_data']['split']}; train {m['n_train']}, calibration "
        f"{m['n_calibration']}, held-out test {m['n_test']}",
        "- Model: standardisation + logistic regression, Platt-calibrated, ONNX",
        f"- Held-out AUC {m['test_auc']:.3f}; Brier {m['test_brier']:.4f} "
        f"(uncalibrated {m['test_brier_uncalibrated']:.4f}); prevalence "
        f"{m['test_prevalence']:.3f}",
        "- Calibration plot: calibration.png",
        "- Reason codes: per-feature contributions to the log-odds",
        "",
    ]
    return "\n".join(lines)


def train_from_config(config: dict[str, Any], out_dir: Path) -> Path:
    """Entry point for ``medgate train`` with ``task = "tabular"``; returns the bundle path."""
    return write_bundle(fit(config), Path(out_dir))
