"""Train, calibrate, evaluate and export the ``ct_nodule_seg`` demo bundle (chest-CT nodules).

    python -m medgate.training.ct_nodule --out models --work runs/ct [--fast]

Steps, seeded throughout:

1. phantom CT series for train / val / test (``medgate.datasets.ct_phantom``, disjoint seeds),
   written as DICOM with ``nodules.csv`` ground truth under ``work/data``;
2. a tiny 3D MONAI UNet trained on 16x48x48 patches at the network grid (the bundle's declared
   transforms applied to the HU volume, exactly as the predictor does) by ``ct_train`` (recipe
   ``RECIPE``: nodule-centred and vessel-centred patches, flips, batch Dice + nodule-balanced
   cross entropy), one CPU thread, tqdm progress, resumable checkpoints and TensorBoard scalars
   in ``work/runs/ct_nodule_seg``;
3. export through ``training.export.write_bundle`` (ONNX with dynamic batch + TorchScript,
   parity-checked, checksums, device UID);
4. the second-stage candidate reducer (``fit_candidate_model``: a logistic regression over the
   features of network components and HU local maxima, ``medgate.models.nodule_candidates``)
   fitted on training-range phantoms the network never saw, stored in ``extra.candidate_model``;
   then the nodule operating threshold chosen on the validation split (largest sensitivity with
   at most ``MAX_VAL_FP`` false positives per scan), through the deployed predictor;
5. held-out evaluation on the test split through the predictor (DICOM in, findings out):
   per-nodule sensitivity and false positives per scan, the sensitivity at <= 1 FP per scan,
   long-axis diameter and volume errors, Dice; recorded in the metadata with the recipe to
   regenerate the split, and a model card in ``docs/README.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydicom
import torch
import typer
from monai.utils import set_determinism
from tqdm import tqdm

from medgate.datasets.ct_phantom import (
    GROUND_TRUTH_FILE,
    SPLIT_BASE,
    CTPhantom,
    write_ct_folder,
)
from medgate.models.bundle import DEMO_WARNING, Bundle, MedgateSpec
from medgate.models.predictor import Predictor, load_predictor
from medgate.models.transforms import activate, build_transform, resize_scores
from medgate.training import ct_train
from medgate.training.ct_train import Recipe, TrainArrays, make_arrays
from medgate.training.evaluate import card_header
from medgate.training.export import update_metadata, write_bundle

log = logging.getLogger(__name__)

NAME = "ct_nodule_seg"
VERSION = "1.1.0"
CHANGELOG = {
    "1.1.0": "second-stage candidate reducer: HU local maxima join the network's components, a "
    "logistic regression over blob/tube/contrast features scores them (fitted on training-range "
    "phantoms the network never saw, threshold on val); small nodules measured as spheres",
    "1.0.0": "3D UNet trained on phantoms, nodule-balanced loss",
}
SPATIAL_SIZE = [32, 96, 96]
HU_WINDOW = (-1000.0, 400.0)
MAX_VAL_FP = 0.5
VOXEL_THRESHOLD = 0.3  # network candidate voxels (the reducer is fitted on this threshold)
# The candidate reducer is fitted on phantoms of the training seed range that the network never
# saw (seeds after the network's training studies): on the network's own training volumes its
# probability is near perfect, and a reducer fitted there would trust it too much.
REDUCER_STUDIES = {"full": 240, "fast": 4}
REDUCER_C = 1.0  # inverse L2 strength of the logistic regression
FULL = {"train": 240, "val": 24, "test": 48, "steps": Recipe.steps, "small": 6}
FAST = {"train": 6, "val": 3, "test": 3, "steps": 4, "small": 2}
SOURCE = "synthetic chest CT phantoms (medgate.datasets.ct_phantom)"
RECIPE = Recipe()  # the training recipe of the committed bundle (ct_train.Recipe)
NETWORK = RECIPE.network()


def _code(value: str, scheme: str, meaning: str) -> dict[str, str]:
    return {"value": value, "scheme": scheme, "meaning": meaning}


def nodule_spec(threshold: float = 0.5) -> MedgateSpec:
    """The bundle's medgate keys: codes, measurements, preprocessing and routing."""
    lung = _code("39607008", "SCT", "Lung structure")
    return MedgateSpec.model_validate(
        {
            "name": NAME,
            "task": "segmentation",
            "demo": True,
            "warning": DEMO_WARNING,
            "labels": [
                {
                    "name": "nodule",
                    "index": 1,
                    # DICOM CID 7159 (Lesion Segmentation Type) under the category
                    # "Morphologically Altered Structure"; the site says which organ.
                    "code": _code("27925004", "SCT", "Nodule"),
                    "finding_site": lung,
                    "threshold": threshold,
                    "category": _code("49755003", "SCT", "Morphologically Altered Structure"),
                    "description": {"en": "solid lung nodule", "zh": "肺实性结节"},
                }
            ],
            "measurements": [
                {
                    "name": "long_axis_diameter",
                    "code": _code("103339001", "SCT", "Long Axis"),
                    "unit": _code("mm", "UCUM", "millimeter"),
                    "method": "nodule_long_axis_mm",
                    "finding_site": lung,
                    "label": "nodule",
                },
                {
                    "name": "volume",
                    "code": _code("118565006", "SCT", "Volume"),
                    "unit": _code("mm3", "UCUM", "cubic millimeter"),
                    "method": "nodule_volume_mm3",
                    "finding_site": lung,
                    "label": "nodule",
                },
            ],
            "preprocessing": {
                "input_kind": "volume",
                "spatial_size": SPATIAL_SIZE,
                "transforms": [
                    {
                        "name": "ScaleIntensityRange",
                        "args": {
                            "a_min": HU_WINDOW[0],
                            "a_max": HU_WINDOW[1],
                            "b_min": 0.0,
                            "b_max": 1.0,
                            "clip": True,
                        },
                    },
                    {"name": "Resize", "args": {"spatial_size": SPATIAL_SIZE, "mode": "trilinear"}},
                ],
            },
            "postprocessing": {"activation": "softmax", "output": "logits"},
            "routing": {
                "modalities": ["CT"],
                "body_parts": ["CHEST"],
                "sop_class_uids": ["1.2.840.10008.5.1.4.1.1.2"],
                "min_slices": 8,
            },
            "max_batch_size": 4,
            "extra": {"postprocess": "nodules", "voxel_threshold": VOXEL_THRESHOLD},
        }
    )


# -- data -------------------------------------------------------------------------------------
def _network_arrays(
    phantom: CTPhantom, spec: MedgateSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, D, H, W) input, (D, H, W) label and (N, 3) nodule centres at the network grid.

    The label is the resized mask plus the network voxel nearest each nodule centre: a 4 mm
    nodule can vanish from a thresholded, z-resized mask, and would then be trained as
    background (it was: small nodules got probability ~0).
    """
    transform = build_transform(spec.preprocessing.transforms)
    x = transform(phantom.hu.astype(np.float32)[None])
    mask = torch.from_numpy(phantom.mask.astype(np.float32))[None, None]
    y = torch.nn.functional.interpolate(mask, size=tuple(SPATIAL_SIZE), mode="trilinear")
    label = (y[0, 0].numpy() >= 0.5).astype(np.int64)
    depth = phantom.shape[0]
    dz, dy, dx = phantom.spacing
    centres = []
    for nodule in phantom.nodules:
        cx, cy, cz = nodule.center_mm
        k = (cz - phantom.origin[2]) / dz
        k = (k + 0.5) * SPATIAL_SIZE[0] / depth - 0.5  # align_corners=False resize
        r = (cy - phantom.origin[1]) / dy * SPATIAL_SIZE[1] / phantom.shape[1]
        c = (cx - phantom.origin[0]) / dx * SPATIAL_SIZE[2] / phantom.shape[2]
        idx = [
            int(np.clip(round(v), 0, n - 1)) for v, n in zip((k, r, c), SPATIAL_SIZE, strict=True)
        ]
        label[tuple(idx)] = 1
        centres.append(idx)
    return np.asarray(x), label, np.asarray(centres, np.int64).reshape(-1, 3)


def read_ground_truth(folder: Path) -> dict[str, list[dict[str, float]]]:
    """``nodules.csv`` as study -> list of nodules (x/y/z centre mm, diameter, volume)."""
    truth: dict[str, list[dict[str, float]]] = {}
    studies = sorted(p.name for p in folder.iterdir() if p.is_dir())
    for study in studies:
        truth[study] = []
    with (folder / GROUND_TRUTH_FILE).open(newline="") as handle:
        for row in csv.DictReader(handle):
            truth.setdefault(row["study"], []).append(
                {k: float(row[k]) for k in ("x_mm", "y_mm", "z_mm", "diameter_mm", "volume_mm3")}
            )
    return truth


def read_series(folder: Path) -> list[pydicom.Dataset]:
    """The slices of one study folder, as the gateway would receive them."""
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


# -- evaluation -------------------------------------------------------------------------------
def _match(
    detections: list[tuple[float, float, float, float, float, float]],
    truths: list[dict[str, float]],
) -> tuple[list[tuple[int, int]], list[int]]:
    """Greedy matching by probability: a detection hits a nodule whose centre is within
    radius + 3 mm. Returns (detection index, truth index) pairs and unmatched detections."""
    hits: list[tuple[int, int]] = []
    free = set(range(len(truths)))
    false = []
    for i, (_, x, y, z, *_rest) in enumerate(detections):
        best, best_d = None, None
        for j in free:
            t = truths[j]
            dist = float(np.linalg.norm([x - t["x_mm"], y - t["y_mm"], z - t["z_mm"]]))
            if dist <= t["diameter_mm"] / 2 + 3.0 and (best_d is None or dist < best_d):
                best, best_d = j, dist
        if best is None:
            false.append(i)
        else:
            free.discard(best)
            hits.append((i, best))
    return hits, false


def _raw_detections(
    predictor: Predictor, folder: Path, voxel_threshold: float | None = None
) -> list[dict[str, Any]]:
    """Every candidate (threshold 0) of every study, with its geometry and the Dice."""
    from medgate.models.nodules import study_nodules

    candidate_model = predictor.bundle.spec.extra.get("candidate_model")
    if voxel_threshold is None:
        voxel_threshold = float(predictor.bundle.spec.extra.get("voxel_threshold", 0.5))
    studies = []
    for study_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        datasets = read_series(study_dir)
        x = predictor.preprocess(datasets)
        out = predictor.split(predictor.infer(x[None]), 0)
        hu, geometry = predictor.read(datasets)
        result = predictor.postprocess(out, datasets)
        mask = result.segmentation.masks["volume"] if result.segmentation else None
        logits = out[predictor.bundle.spec.postprocessing.output or "logits"]
        prob = activate(resize_scores(logits, geometry.shape), "softmax")[1]
        nodules = study_nodules(
            prob, geometry, datasets, voxel_threshold, hu=hu, candidate_model=candidate_model
        )
        dets = [
            (n.probability, *n.centre_mm, n.long_axis_mm, n.volume_mm3)  # type: ignore[misc]
            for n in nodules
        ]
        truth_mask = np.load(study_dir / "mask.npz")["mask"]
        # predictor sorts slices by position: the generator writes them in that order already
        studies.append({"study": study_dir.name, "dets": dets, "mask": mask, "truth": truth_mask})
    return studies


SIZE_BANDS = {"4-6.5mm": 6.5, "6.5-9mm": 9.0, "9-15mm": float("inf")}


def _size_band(diameter_mm: float) -> str:
    """The ``SIZE_BANDS`` name of a nodule diameter (upper bounds exclusive)."""
    return next(name for name, upper in SIZE_BANDS.items() if diameter_mm < upper)


def _operating_point(
    studies: list[dict[str, Any]], truth: dict[str, list[dict[str, float]]], threshold: float
) -> dict[str, Any]:
    tp = fp = 0
    diam_err, vol_err = [], []
    total = sum(len(truth[s["study"]]) for s in studies)
    bands = {name: [0, 0] for name in SIZE_BANDS}  # detected, nodules
    for s in studies:
        dets = [d for d in s["dets"] if d[0] >= threshold]
        hits, false = _match(dets, truth[s["study"]])
        tp += len(hits)
        fp += len(false)
        found = {j for _, j in hits}
        for j, t in enumerate(truth[s["study"]]):
            band = _size_band(t["diameter_mm"])
            bands[band][0] += int(j in found)
            bands[band][1] += 1
        for i, j in hits:
            t = truth[s["study"]][j]
            diam_err.append(abs(dets[i][4] - t["diameter_mm"]))
            vol_err.append(abs(dets[i][5] - t["volume_mm3"]) / t["volume_mm3"])
    return {
        "sensitivity_by_size": {
            name: {"detected": hit, "nodules": count, "sensitivity": hit / count if count else None}
            for name, (hit, count) in bands.items()
        },
        "threshold": threshold,
        "nodules": total,
        "detected": tp,
        "sensitivity": tp / total if total else 1.0,
        "false_positives": fp,
        "fp_per_scan": fp / max(len(studies), 1),
        "diameter_abs_error_mm": float(np.mean(diam_err)) if diam_err else None,
        "diameter_abs_error_max_mm": float(np.max(diam_err)) if diam_err else None,
        "volume_rel_error": float(np.mean(vol_err)) if vol_err else None,
    }


def choose_threshold(
    studies: list[dict[str, Any]], truth: dict[str, list[dict[str, float]]], max_fp: float
) -> float:
    """The lowest candidate score whose FP rate per scan is <= ``max_fp`` (best sensitivity)."""
    scores = sorted({round(d[0], 6) for s in studies for d in s["dets"]} | {0.5})
    for score in scores:
        if _operating_point(studies, truth, score)["fp_per_scan"] <= max_fp:
            return float(score)
    return 0.99


def evaluate_nodules(bundle: Bundle | Path, folder: Path) -> dict[str, Any]:
    """Held-out metrics of the bundle on a phantom folder, through the deployed predictor."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    predictor = load_predictor(bundle)
    truth = read_ground_truth(folder)
    studies = _raw_detections(predictor, folder)
    threshold = bundle.spec.labels[0].threshold
    point = _operating_point(studies, truth, threshold)
    # sensitivity at <= 1 FP per scan: the best over all candidate thresholds
    best_sens, best_op = 0.0, None
    for score in sorted({d[0] for s in studies for d in s["dets"]}):
        op = _operating_point(studies, truth, score)
        if op["fp_per_scan"] <= 1.0 and (best_op is None or op["sensitivity"] > best_sens):
            best_sens, best_op = op["sensitivity"], op
    dice = []
    for s in studies:
        if s["truth"].any() or (s["mask"] is not None and s["mask"].any()):
            p, t = s["mask"] > 0, s["truth"] > 0
            dice.append(2 * (p & t).sum() / max(p.sum() + t.sum(), 1))
    return {
        "studies": len(studies),
        "backend": predictor.backend.name,
        "operating_point": point,
        "sensitivity_at_1fp_per_scan": best_sens,
        "operating_point_at_1fp_per_scan": best_op,  # the best threshold with <= 1 FP per scan
        "dice_mean": float(np.mean(dice)) if dice else None,
    }


# -- training ---------------------------------------------------------------------------------
def train_arrays(phantoms: list[CTPhantom], spec: MedgateSpec) -> TrainArrays:
    """The phantoms at the network grid, with nodule and hard-negative centres."""
    return make_arrays([_network_arrays(p, spec) for p in phantoms])


def train_network(
    train: list[CTPhantom],
    spec: MedgateSpec,
    steps: int,
    run_dir: Path,
    progress: bool,
    *,
    recipe: Recipe = RECIPE,
    val: list[CTPhantom] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    checkpoint_every: int = 200,
) -> torch.nn.Module:
    """Train on nodule-biased patches (``ct_train.train``); returns the network (eval mode)."""
    recipe = dataclasses.replace(recipe, steps=steps)
    return ct_train.train(
        train_arrays(train, spec),
        recipe,
        run_dir,
        progress=progress,
        resume=resume,
        stop_after=stop_after,
        checkpoint_every=checkpoint_every,
        val=train_arrays(val, spec) if val else None,
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _bands(op: dict[str, Any] | None) -> str:
    if not op:
        return ""
    return (
        " ("
        + ", ".join(
            f"{band} {_num(v['sensitivity'])}" for band, v in op["sensitivity_by_size"].items()
        )
        + f"; {op['fp_per_scan']:.2f} FP per scan)"
    )


def _model_card(bundle: Bundle, report: dict[str, Any]) -> str:
    spec = bundle.spec
    op = report["operating_point"]
    task = f"per-nodule detection and measurement on chest CT — {bundle.description}"
    lines = card_header(bundle, task, warn=True)
    lines += [
        "## Input and outputs",
        "",
        f"- Axial CT series (modality CT, body part CHEST, >= {spec.routing.min_slices} slices); "
        f"HU window {HU_WINDOW[0]:.0f}..{HU_WINDOW[1]:.0f} scaled to 0..1, resized to "
        f"{SPATIAL_SIZE} (D, H, W); the probability map is resized back to the source grid.",
        "- One finding per nodule (SCT 27925004 Nodule, site SCT 39607008 Lung "
        f"structure) with probability (threshold {spec.labels[0].threshold:.3f}), tracking id "
        "`nodule-N`, long-axis diameter (SCT 103339001, UCUM mm; ellipsoid fit of the "
        "probability-weighted component) and volume (SCT 118565006, UCUM mm3); a SEG mask.",
        "- Two stages: the network's components (voxel probability >= "
        f"{spec.extra.get('voxel_threshold', VOXEL_THRESHOLD)}) and local HU maxima in the "
        "lungs that no component covers are the candidates; a logistic regression "
        "(`medgate.extra.candidate_model`: network probability, HU contrast, Hessian blob / "
        "tube measures, extent of the half-maximum region) gives each its probability.",
        "",
        "## Training data",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in spec.training_data.items()]
    fitted = spec.extra.get("candidate_model", {}).get("fitted_on")
    if fitted:
        lines.append(
            f"- candidate reducer: {fitted['candidates']} candidates ({fitted['nodule_candidates']}"
            f" nodules) of training-range seeds {fitted['seeds']}, never used to train the "
            "network; operating threshold chosen on the validation split"
        )
    lines += [
        "",
        f"## Held-out metrics ({report['studies']} phantom scans, test seeds from "
        f"{SPLIT_BASE['test']})",
        "",
        f"- At the bundle threshold: sensitivity {op['sensitivity']:.3f} "
        f"({op['detected']}/{op['nodules']} nodules), {op['fp_per_scan']:.2f} false positives "
        "per scan",
        "- Sensitivity at <= 1 false positive per scan: "
        f"{report['sensitivity_at_1fp_per_scan']:.3f}"
        + _bands(report.get("operating_point_at_1fp_per_scan")),
        f"- Long-axis diameter mean absolute error (detected nodules): "
        f"{_num(op['diameter_abs_error_mm'])} mm (max {_num(op['diameter_abs_error_max_mm'])} mm)",
        f"- Volume mean relative error: {_num(op['volume_rel_error'])}",
        "- Sensitivity at the bundle threshold by diameter: "
        + ", ".join(
            f"{band} {_num(v['sensitivity'])} ({v['detected']}/{v['nodules']})"
            for band, v in op.get("sensitivity_by_size", {}).items()
        ),
        f"- Dice (scans with a nodule or a detection): {_num(report['dice_mean'])}",
        "",
        "## Limits",
        "",
        "- Trained and tested only on synthetic phantoms (spherical solid nodules 4-15 mm, "
        "straight vessels, 3.0-3.6 mm pixels): performance on real CT is unknown and expected "
        "to be poor. Part-solid and ground-glass nodules, juxtapleural nodules and masses "
        "> 15 mm are out of scope.",
        "- A decision-support aid: a radiologist reviews every result.",
        "",
    ]
    return "\n".join(lines)


def make_ct_nodule_bundle(
    out: Path,
    work: Path,
    fast: bool = False,
    progress: bool = True,
    steps: int | None = None,
    resume: bool = False,
    recipe: Recipe = RECIPE,
) -> Bundle:
    """Regenerate the phantom data and the ``ct_nodule_seg`` bundle under ``out``.

    ``resume`` continues an interrupted training from ``work/runs/ct_nodule_seg/checkpoint.pt``
    (the data are regenerated identically from their seeds); without it the run starts afresh.
    """
    set_determinism(seed=0)
    sizes = dict(FAST if fast else FULL)
    if steps:
        sizes["steps"] = steps
    started = time.monotonic()
    data = work / "data"
    phantoms: dict[str, list[CTPhantom]] = {}
    for split in ("train", "val", "test"):
        folder = data / split
        if folder.exists():
            shutil.rmtree(folder)
        phantoms[split] = write_ct_folder(folder, split, sizes[split], progress=progress)
    spec = nodule_spec()
    run_dir = work / "runs" / NAME
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = train_network(
        phantoms["train"],
        spec,
        sizes["steps"],
        run_dir,
        progress,
        recipe=recipe,
        val=phantoms["val"],
        resume=resume,
    )
    spec.training_data = {
        "source": SOURCE,
        "train_studies": sizes["train"],
        "train_nodules": sum(len(p.nodules) for p in phantoms["train"]),
        "val_studies": sizes["val"],
        "steps": sizes["steps"],
        "patch": list(recipe.patch),
        "recipe": dataclasses.replace(recipe, steps=sizes["steps"]).as_dict(),
        "seeds": {k: f"{v}.." for k, v in SPLIT_BASE.items()},
    }
    example = torch.from_numpy(np.stack([_network_arrays(p, spec)[0] for p in phantoms["val"][:2]]))
    bundle = write_bundle(
        out / NAME,
        model=model,
        example=example,
        spec=spec,
        output_names=["logits"],
        version=VERSION,
        description="Lung nodule segmentation of chest CT with per-nodule long-axis diameter "
        "and volume",
        authors="medgate contributors",
        intended_use="Demonstration of the medgate pipeline on synthetic chest CT phantoms. "
        "Not a medical device; not for clinical use.",
    )
    return finalize_bundle(bundle, data, sizes, started)


def candidate_rows(predictor: Predictor, phantom: CTPhantom) -> tuple[list[np.ndarray], list[bool]]:
    """Features of every candidate of one phantom and whether it is a nodule (its centre within
    radius + 3 mm of a nodule centre: the evaluation's matching rule)."""
    from medgate.models.nodules import scan_candidates

    logits = predictor.split(predictor.infer(predictor.preprocess_array(phantom.hu)[None]), 0)
    scores = logits[predictor.bundle.spec.postprocessing.output or "logits"]
    prob = activate(resize_scores(scores, phantom.shape), "softmax")[1]
    dz, dy, dx = phantom.spacing
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = (0, 0, dz), (0, dy, 0), (dx, 0, 0)
    affine[:3, 3] = phantom.origin
    hu = phantom.hu.astype(np.float32)
    features, labels = [], []
    for cand in scan_candidates(prob, hu, phantom.spacing, VOXEL_THRESHOLD, affine):
        centre = np.asarray(cand.nodule.centre_mm)
        labels.append(
            any(
                np.linalg.norm(centre - np.asarray(n.center_mm)) <= n.diameter_mm / 2 + 3.0
                for n in phantom.nodules
            )
        )
        features.append(cand.features)
    return features, labels


def fit_candidate_model(
    predictor: Predictor, start: int, count: int, progress: bool = False
) -> dict[str, Any]:
    """The logistic-regression candidate reducer (``extra.candidate_model``), fitted on the
    candidates of ``count`` training-range phantoms from seed ``start`` (after the network's
    training studies, so never trained on), balanced classes, standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from medgate.datasets.ct_phantom import generate_ct_phantom
    from medgate.models.nodule_candidates import FEATURES

    xs: list[np.ndarray] = []
    ys: list[bool] = []
    seeds = range(SPLIT_BASE["train"] + start, SPLIT_BASE["train"] + start + count)
    for seed in tqdm(seeds, desc="ct_nodule_seg reducer", disable=not progress):
        features, labels = candidate_rows(predictor, generate_ct_phantom(seed))
        xs += features
        ys += labels
    x, y = np.stack(xs), np.asarray(ys)
    if y.all() or not y.any():
        raise ValueError(f"reducer fit needs nodule and non-nodule candidates ({len(y)} found)")
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    lr = LogisticRegression(C=REDUCER_C, max_iter=5000, class_weight="balanced")
    lr.fit((x - scaler.mean_) / scale, y)
    log.info("reducer: %d candidates (%d nodules) from %d phantoms", len(y), int(y.sum()), count)
    return {
        "kind": "logistic_regression",
        "features": list(FEATURES),
        "mean": [float(v) for v in scaler.mean_],
        "scale": [float(v) for v in scale],
        "coef": [float(v) for v in lr.coef_[0]],
        "intercept": float(lr.intercept_[0]),
        "fitted_on": {
            "split": "train",
            "seeds": f"{seeds.start}..{seeds.stop - 1}",
            "candidates": len(y),
            "nodule_candidates": int(y.sum()),
            "voxel_threshold": VOXEL_THRESHOLD,
        },
    }


def finalize_bundle(
    bundle: Bundle, data: Path, sizes: dict[str, int], started: float | None = None
) -> Bundle:
    """Threshold on val, held-out evaluation on test, metadata and model card (no training)."""
    started = time.monotonic() if started is None else started
    work = data.parent
    # The second-stage candidate reducer, fitted on training-range phantoms the network never
    # saw; then the operating threshold on the validation split, through the deployed predictor.
    fast = sizes["train"] < FULL["train"]
    model = fit_candidate_model(
        load_predictor(bundle),
        start=sizes["train"],
        count=REDUCER_STUDIES["fast" if fast else "full"],
    )
    voxel_threshold = VOXEL_THRESHOLD
    extra = dict(bundle.spec.extra)
    extra["voxel_threshold"] = voxel_threshold
    extra["candidate_model"] = model
    bundle = update_metadata(bundle.path, medgate={"extra": extra})
    val_truth = read_ground_truth(data / "val")
    val_studies = _raw_detections(load_predictor(bundle), data / "val", voxel_threshold)
    threshold = choose_threshold(val_studies, val_truth, MAX_VAL_FP)
    log.info(
        "val: threshold %.3f -> sensitivity %.3f",
        threshold,
        _operating_point(val_studies, val_truth, threshold)["sensitivity"],
    )
    labels = [lab.model_dump(mode="json") for lab in bundle.spec.labels]
    labels[0]["threshold"] = threshold
    ndf = bundle.metadata["network_data_format"]
    ndf["inputs"]["image"]["modality"] = "CT"
    bundle = update_metadata(
        bundle.path,
        network_data_format=ndf,
        image_classes="single channel CT volume, HU window -1000..400 scaled to [0, 1]",
        data_source=SOURCE,
        version=VERSION,
        changelog=CHANGELOG,
        medgate={"labels": labels},
    )
    report = evaluate_nodules(bundle, data / "test")
    small = evaluate_nodules(
        bundle, _subset(data / "test", work / "data" / "test_small", sizes["small"])
    )
    metrics = dict(bundle.spec.metrics)
    metrics["held_out"] = {"studies": report["studies"], "metrics": report}
    metrics["held_out_small"] = {"studies": small["studies"], "metrics": small}
    op = report["operating_point"]
    bundle = update_metadata(
        bundle.path,
        eval_metrics={
            "sensitivity": op["sensitivity"],
            "fp_per_scan": op["fp_per_scan"],
            "sensitivity_at_1fp_per_scan": report["sensitivity_at_1fp_per_scan"],
            "diameter_abs_error_mm": op["diameter_abs_error_mm"],
            "dice_mean": report["dice_mean"],
        },
        medgate={
            "metrics": metrics,
            "evaluation": {
                "generator": "medgate.datasets.ct_phantom",
                "split": "test",
                "base": SPLIT_BASE["test"],
                "count": sizes["test"],
                "small_count": sizes["small"],
            },
        },
    )
    docs = bundle.path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "README.md").write_text(_model_card(bundle, report), encoding="utf-8")
    elapsed = time.monotonic() - started
    (work / "summary.json").write_text(json.dumps({"seconds": elapsed, **report}, indent=2))
    log.info("made %s in %.0f s", NAME, elapsed)
    return bundle


def _subset(folder: Path, target: Path, count: int) -> Path:
    """The first ``count`` studies of a split folder (with their ground truth) as a new folder."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    studies = sorted(p for p in folder.iterdir() if p.is_dir())[:count]
    for study in studies:
        shutil.copytree(study, target / study.name)
    names = {s.name for s in studies}
    with (
        (folder / GROUND_TRUTH_FILE).open(newline="") as src,
        (target / GROUND_TRUTH_FILE).open("w", newline="") as dst,
    ):
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        writer.writerows(row for row in reader if row["study"] in names)
    return target


def main(
    out: Annotated[Path, typer.Option(help="where the bundle goes")] = Path("models"),
    work: Annotated[Path, typer.Option(help="data, runs and evaluation")] = Path("runs/ct"),
    fast: Annotated[bool, typer.Option(help="tiny data, a few steps (smoke test)")] = False,
    steps: Annotated[int, typer.Option(help="training steps (0: the default)")] = 0,
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted training from WORK's checkpoint")
    ] = False,
    evaluate_only: Annotated[
        bool, typer.Option(help="re-calibrate and re-evaluate the bundle in OUT on WORK/data")
    ] = False,
) -> None:
    """Regenerate the CT phantom data and the ct_nodule_seg bundle from scratch."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if evaluate_only:
        sizes = FAST if fast else FULL
        bundle = finalize_bundle(Bundle.load(out / NAME), work / "data", sizes)
    else:
        bundle = make_ct_nodule_bundle(out, work, fast, steps=steps, resume=resume)
    typer.echo(f"{bundle.name}: {bundle.path} device_uid={bundle.device_uid}")
    typer.echo(json.dumps(bundle.spec.metrics.get("held_out", {}), indent=1)[:3000])


if __name__ == "__main__":
    typer.run(main)
