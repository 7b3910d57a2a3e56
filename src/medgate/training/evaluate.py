"""Evaluate a bundle on held-out labelled data through the deployed path.

Studies go through the same ``Predictor`` that the gateway runs (DICOM decode, declared MONAI
transforms, ONNX Runtime, post-processing onto the source grid), so the figures describe what a
doctor would get, not what the training loop saw. Output: ``metrics.json``, PNG plots (ROC,
calibration, confusion matrices; Dice distribution and measurement error for segmentation) and a
model card (``MODEL_CARD.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score, roc_curve
from tqdm import tqdm

from medgate.datasets.folder import LabeledStudy, read_labeled_folder
from medgate.models.bundle import DEMO_WARNING, Bundle
from medgate.models.findings import ModelResult
from medgate.models.predictor import Predictor, load_predictor
from medgate.training.image_trainer import dice_scores


def run_predictor(
    predictor: Predictor, studies: list[LabeledStudy], batch: int = 32, progress: bool = False
) -> list[ModelResult]:
    """Results for every study, inferring in batches like the serving layer does."""
    results: list[ModelResult] = []
    chunks = range(0, len(studies), batch)
    for start in tqdm(chunks, desc="evaluate", disable=not progress, unit="batch"):
        group = studies[start : start + batch]
        datasets = [study.datasets() for study in group]
        x = np.stack([predictor.preprocess(ds) for ds in datasets])
        outputs = predictor.infer(x)
        for i, ds in enumerate(datasets):
            results.append(predictor.postprocess(predictor.split(outputs, i), ds))
    return results


def expected_calibration_error(truth: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(truth[sel].mean() - probs[sel].mean())
    return float(total)


def _classification(
    bundle: Bundle, studies: list[LabeledStudy], results: list[ModelResult], out_dir: Path | None
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    names = [label.name for label in bundle.spec.labels]
    fig_roc, ax_roc = plt.subplots(figsize=(5, 5))
    fig_cal, ax_cal = plt.subplots(figsize=(5, 5))
    fig_cm, axes_cm = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3))
    axes_cm = np.atleast_1d(axes_cm)
    for j, name in enumerate(names):
        truth = np.array([s.labels[name] for s in studies])
        finding = [next(f for f in r.findings if f.label == name) for r in results]
        probs = np.array([f.probability for f in finding])
        present = np.array([f.present for f in finding])
        entry: dict[str, Any] = {"n": len(truth), "positives": int(truth.sum())}
        if 0 < truth.sum() < len(truth):
            entry["auc"] = float(roc_auc_score(truth, probs))
            fpr, tpr, _ = roc_curve(truth, probs)
            ax_roc.plot(fpr, tpr, label=f"{name} (AUC {entry['auc']:.3f})")
        tn, fp, fn, tp = confusion_matrix(truth, present, labels=[0, 1]).ravel()
        entry.update(
            sensitivity=float(tp / max(tp + fn, 1)),
            specificity=float(tn / max(tn + fp, 1)),
            threshold=float(finding[0].threshold),
            brier=float(brier_score_loss(truth, probs)),
            ece=expected_calibration_error(truth, probs),
            confusion={"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        )
        metrics[name] = entry
        edges = np.linspace(0, 1, 11)
        which = np.clip(np.digitize(probs, edges) - 1, 0, 9)
        xs = [probs[which == b].mean() for b in range(10) if (which == b).any()]
        ys = [truth[which == b].mean() for b in range(10) if (which == b).any()]
        ax_cal.plot(xs, ys, marker="o", label=name)
        ax = axes_cm[j]
        ax.imshow([[tn, fp], [fn, tp]], cmap="Blues")
        for (r, c), v in np.ndenumerate(np.array([[tn, fp], [fn, tp]])):
            ax.text(c, r, str(v), ha="center", va="center")
        ax.set_xticks([0, 1], ["pred -", "pred +"])
        ax.set_yticks([0, 1], ["true -", "true +"])
        ax.set_title(name)
    ax_roc.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {bundle.name}")
    ax_roc.legend(loc="lower right", fontsize=8)
    ax_cal.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax_cal.set(xlabel="predicted probability", ylabel="observed frequency", title="calibration")
    ax_cal.legend(fontsize=8)
    if out_dir is not None:
        fig_roc.savefig(out_dir / "roc.png", dpi=90, bbox_inches="tight")
        fig_cal.savefig(out_dir / "calibration.png", dpi=90, bbox_inches="tight")
        fig_cm.savefig(out_dir / "confusion.png", dpi=90, bbox_inches="tight")
    for fig in (fig_roc, fig_cal, fig_cm):
        plt.close(fig)
    aucs = [m["auc"] for m in metrics.values() if "auc" in m]
    metrics["mean_auc"] = float(np.mean(aucs)) if aucs else None
    metrics["min_auc"] = float(np.min(aucs)) if aucs else None
    return metrics


def _segmentation(
    bundle: Bundle, studies: list[LabeledStudy], results: list[ModelResult], out_dir: Path | None
) -> dict[str, Any]:
    values = [label.index for label in bundle.spec.labels]
    dices = []
    for study, result in zip(studies, results, strict=True):
        truth = study.mask_array()
        if truth is None or result.segmentation is None:
            raise ValueError(f"study {study.patient_id}: needs a ground-truth mask and a mask")
        pred = next(iter(result.segmentation.masks.values()))
        dices.append(dice_scores(pred[None], truth[None], values)[0])
    dice = np.array(dices)
    metrics: dict[str, Any] = {"n": len(studies)}
    for j, label in enumerate(bundle.spec.labels):
        metrics[f"dice_{label.name}"] = {
            "mean": float(dice[:, j].mean()),
            "median": float(np.median(dice[:, j])),
            "p05": float(np.percentile(dice[:, j], 5)),
        }
    for definition in bundle.spec.measurements:
        if definition.name not in studies[0].values and definition.method != "cardiothoracic_ratio":
            continue
        key = "ctr" if definition.method == "cardiothoracic_ratio" else definition.name
        truth = np.array([s.values[key] for s in studies])
        pred = np.array(
            [next(m.value for m in r.measurements if m.name == definition.code) for r in results]
        )
        err = np.abs(pred - truth)
        metrics[definition.name] = {
            "mae": float(err.mean()),
            "p95_abs_error": float(np.percentile(err, 95)),
            "max_abs_error": float(err.max()),
            "unit": definition.unit.value,
        }
        if out_dir is not None:
            fig, ax = plt.subplots(1, 2, figsize=(9, 4))
            ax[0].scatter(truth, pred, s=8)
            lo, hi = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
            ax[0].plot([lo, hi], [lo, hi], "k--", lw=0.5)
            ax[0].set(xlabel=f"true {definition.name}", ylabel="measured", title="measurement")
            ax[1].hist(pred - truth, bins=30)
            ax[1].set(xlabel="measured - true", title=f"error (MAE {err.mean():.4f})")
            fig.savefig(out_dir / f"measurement_{definition.name}.png", dpi=90, bbox_inches="tight")
            plt.close(fig)
    if out_dir is not None:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.boxplot([dice[:, j] for j in range(dice.shape[1])])
        ax.set_xticks(range(1, dice.shape[1] + 1), [lab.name for lab in bundle.spec.labels])
        ax.set(ylabel="Dice", title=f"Dice distribution: {bundle.name}")
        fig.savefig(out_dir / "dice.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    metrics["mean_dice"] = float(dice.mean())
    return metrics


def evaluate_bundle(
    bundle: Bundle | Path,
    data_dir: Path,
    out_dir: Path | None = None,
    *,
    batch: int = 32,
    progress: bool = False,
    results: list[ModelResult] | None = None,
) -> dict[str, Any]:
    """Metrics of ``bundle`` on the labelled folder ``data_dir``; plots + card into ``out_dir``.

    ``results`` (one per study in labels.csv order) skips inference when already computed.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    findings = [label.name for label in bundle.spec.labels]
    studies = read_labeled_folder(Path(data_dir), findings)
    if not studies:
        raise ValueError(f"{data_dir}: no studies to evaluate")
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    backend = "given"
    if results is None:
        predictor = load_predictor(bundle, "cpu")
        backend = predictor.backend.name
        results = run_predictor(predictor, studies, batch, progress)
    if len(results) != len(studies):
        raise ValueError(f"{len(results)} results for {len(studies)} studies")
    if bundle.task == "classification":
        metrics = _classification(bundle, studies, results, out_dir)
    elif bundle.task == "segmentation":
        metrics = _segmentation(bundle, studies, results, out_dir)
    else:
        raise ValueError(f"evaluate supports classification and segmentation, not {bundle.task}")
    report = {
        "bundle": bundle.name,
        "version": bundle.version,
        "device_uid": bundle.device_uid,
        "data": str(data_dir),
        "studies": len(studies),
        "backend": backend,
        "metrics": metrics,
    }
    if out_dir is not None:
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        (out_dir / "MODEL_CARD.md").write_text(model_card(bundle, report), encoding="utf-8")
    return report


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def card_header(bundle: Bundle, task: str, warn: bool | None = None) -> list[str]:
    """The first lines of a model card: name, warning, task, device UID, backends, intended use.

    ``warn`` (default: the bundle is a demo) puts the demo warning under the title."""
    meta, spec = bundle.metadata, bundle.spec
    lines = [f"# Model card: {bundle.name} {bundle.version}", ""]
    if bundle.demo if warn is None else warn:
        lines += [f"> **Warning: {bundle.warning or DEMO_WARNING}**", ""]
    return [
        *lines,
        f"- Task: {task}",
        f"- Device UID (changes with every retrain): `{bundle.device_uid}`",
        f"- Backends: {', '.join(bundle.model_files)}; ONNX opset {spec.onnx_opset}",
        f"- MONAI {meta.get('monai_version')}, PyTorch {meta.get('pytorch_version')}",
        "",
        "## Intended use",
        "",
        str(meta.get("intended_use", "")),
        "",
    ]


def model_card(bundle: Bundle, report: dict[str, Any] | None = None) -> str:
    """A markdown model card: intended use, data, metrics, limits and the demo warning."""
    spec = bundle.spec
    lines = card_header(bundle, f"{bundle.task} — {bundle.description}")
    lines += [
        "## Outputs",
        "",
        "| label | code | threshold |",
        "|---|---|---|",
    ]
    for label in spec.labels:
        code = f"{label.code.scheme} {label.code.value} ({label.code.meaning})"
        lines.append(f"| {label.name} | {code} | {label.threshold:.3f} |")
    for m in spec.measurements:
        lines.append(
            f"| {m.name} (measurement) | {m.code.scheme} {m.code.value} | unit {m.unit.value} |"
        )
    lines += ["", "## Training data", ""]
    lines += [f"- {k}: {v}" for k, v in spec.training_data.items()] or ["- not recorded"]
    lines += ["", "## Held-out metrics", ""]
    metrics = (report or {}).get("metrics") or spec.metrics.get("held_out", {}).get("metrics", {})
    for key, value in metrics.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if not isinstance(v, dict))
            lines.append(f"- {key}: {shown}")
        else:
            lines.append(f"- {key}: {_fmt(value)}")
    lines += [
        "",
        "## Limits",
        "",
        "- Trained and tested only on synthetic phantoms: performance on real radiographs is "
        "unknown and expected to be poor."
        if bundle.demo
        else "- Validated only on the data summarised above.",
        "- Single frontal (PA) chest radiographs of adults; lateral views, children and "
        "portable AP films are out of scope."
        if bundle.task != "triage"
        else "- Triage depends on the upstream imaging models' outputs.",
        "- A decision-support aid: a clinician reviews every result.",
        "",
    ]
    return "\n".join(lines)
