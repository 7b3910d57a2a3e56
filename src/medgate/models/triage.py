"""Study triage: from the imaging models' results to a priority (critical / urgent / routine).

The triage bundle holds a small scikit-learn model exported to ONNX. Its input is a feature
vector built from the upstream ``ModelResult``s by *label name* (``p_<finding label>``) and
*measurement method* (``m_<name>``), listed in the bundle's ``preprocessing.features``; a feature
no upstream model produced takes the bundle's neutral default. The reasons name the findings and
measurements that drove the decision, so a doctor sees why a study went to the top of the list.

Only the learned model lives here; the transparent rule used when no triage bundle is installed
is a clinical rule and lives in ``medgate.clinical.triage_rules``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from medgate.models.backends import OnnxBackend
from medgate.models.bundle import Bundle
from medgate.models.findings import ModelResult, Priority, TriageResult

PRIORITIES: tuple[Priority, ...] = ("routine", "urgent", "critical")
"""Class index -> priority, as the triage model outputs them."""


def finding_features(
    model_results: Sequence[ModelResult],
) -> tuple[dict[str, float], list[str]]:
    """``p_<label>`` / ``m_<measurement>`` values of a study and the reasons to show a doctor."""
    values: dict[str, float] = {}
    reasons: list[str] = []
    for result in model_results:
        for finding in result.findings:
            key = f"p_{finding.label}"
            values[key] = max(values.get(key, 0.0), finding.probability)
            if finding.present:
                reasons.append(
                    f"{finding.finding_type.meaning} suspected "
                    f"(p={finding.probability:.2f} >= {finding.threshold:.2f}, "
                    f"{result.bundle_name})"
                )
        for m in result.measurements:
            key = f"m_{m.name.value.lower()}"
            values[key] = m.value
    return values, reasons


def triage_features(
    model_results: Sequence[ModelResult], names: Sequence[str], defaults: dict[str, float]
) -> np.ndarray:
    """The (1, F) float32 feature row for ``names``; missing features take ``defaults``."""
    values, _ = finding_features(model_results)
    row = [values.get(name, defaults.get(name, 0.0)) for name in names]
    return np.asarray([row], np.float32)


@lru_cache(maxsize=8)
def _session(path: str, sha256: str) -> OnnxBackend:
    # Keyed on the file's hash so that a retrained bundle at the same path is reloaded.
    return OnnxBackend(Path(path), "cpu", threads=1)


def triage(model_results: Sequence[ModelResult], bundle: Bundle) -> TriageResult:
    """Priority and reasons for one study from its imaging results, by the triage bundle."""
    values, reasons = finding_features(model_results)
    ctr = values.get("m_ctr")
    if ctr is not None and ctr > 0.5:
        reasons.append(f"cardiothoracic ratio {ctr:.2f} > 0.50")
    spec = bundle.spec
    names = spec.preprocessing.features
    defaults = {k: float(v) for k, v in spec.extra.get("feature_defaults", {}).items()}
    x = triage_features(model_results, names, defaults)
    onnx_path = bundle.model_files.get("onnx")
    if onnx_path is None:
        raise ValueError(f"{bundle.name}: the triage bundle needs models/model.onnx")
    outputs = _session(str(onnx_path), bundle.model_sha256).run(x)
    probs = np.asarray(outputs[spec.postprocessing.output or "probabilities"], np.float64)[0]
    thresholds = {label.name: label.threshold for label in spec.labels}
    scores = {f"p_{PRIORITIES[i]}": float(p) for i, p in enumerate(probs)}
    if probs[2] >= thresholds.get("critical", 0.5):
        priority: Priority = "critical"
    elif probs[1] + probs[2] >= thresholds.get("urgent", 0.5):
        priority = "urgent"
    else:
        priority = "routine"
    reasons.append(
        f"triage model {bundle.name} {bundle.version}: "
        + ", ".join(f"{k}={v:.2f}" for k, v in scores.items())
    )
    if priority == "routine" and len(reasons) == 1:
        reasons.insert(0, "no finding above threshold")
    return TriageResult(
        priority=priority,
        reasons=reasons,
        scores={**scores, **{k: round(v, 4) for k, v in values.items()}},
        bundle_name=bundle.name,
        bundle_version=bundle.version,
    )
