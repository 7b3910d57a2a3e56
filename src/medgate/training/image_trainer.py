"""Train an imaging bundle (classification or segmentation) from a ``TrainConfig``.

MONAI networks, losses and metrics; tqdm progress; a checkpoint after every epoch in
``run_dir/checkpoint.pt`` (model, optimiser, epoch, best score) so an interrupted run resumes
where it stopped; scalars to TensorBoard event files in ``run_dir/tb``. The best epoch on the
validation split is exported as the bundle.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score, roc_curve
from tensorboardX import SummaryWriter
from tqdm import tqdm

from medgate.datasets.cxr_phantom import FINDINGS
from medgate.models.bundle import Bundle, MedgateSpec
from medgate.models.networks import build_network
from medgate.training.checkpoints import save_checkpoint
from medgate.training.config import TrainConfig
from medgate.training.data import ArrayData, load_arrays, resolve_splits
from medgate.training.export import write_bundle
from medgate.training.presets import preset

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PHANTOM_SOURCE = "synthetic chest radiograph phantoms (medgate.datasets.cxr_phantom)"


def _spec(cfg: TrainConfig) -> MedgateSpec:
    return MedgateSpec(name=cfg.name, demo=cfg.demo, **preset(cfg.preset, cfg.size))


def _network(cfg: TrainConfig, spec: MedgateSpec) -> torch.nn.Module:
    args = dict(cfg.network.args)
    if cfg.network.kind == "map_classifier":
        args.setdefault("num_labels", len(spec.labels))
    elif cfg.network.kind == "unet":
        args.setdefault("out_channels", len(spec.labels) + 1)
    return build_network(cfg.network.kind, **args)


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def dice_scores(pred: np.ndarray, truth: np.ndarray, labels: list[int]) -> np.ndarray:
    """Per-case Dice for each label value: (N, len(labels)); 1.0 where both are empty."""
    scores = np.zeros((pred.shape[0], len(labels)))
    for j, value in enumerate(labels):
        p = (pred == value).reshape(pred.shape[0], -1)
        t = (truth == value).reshape(truth.shape[0], -1)
        inter = (p & t).sum(1)
        total = p.sum(1) + t.sum(1)
        scores[:, j] = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    return scores


def evaluate_arrays(
    model: torch.nn.Module, data: ArrayData, task: str, spec: MedgateSpec, batch: int = 64
) -> dict[str, float]:
    """Validation metrics at network resolution: per-label AUC, or per-label mean Dice."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(data.x), batch):
            outputs.append(_forward(model, torch.from_numpy(data.x[start : start + batch])))
    scores = torch.cat(outputs).numpy()
    metrics: dict[str, float] = {}
    if task == "classification":
        for label in spec.labels:
            truth = data.y[:, label.index]
            if 0 < truth.sum() < len(truth):
                metrics[f"auc_{label.name}"] = float(roc_auc_score(truth, scores[:, label.index]))
        metrics["score"] = float(np.mean(list(metrics.values()) or [0.0]))
    else:
        pred = scores.argmax(axis=1)
        dice = dice_scores(pred, data.y, [lab.index for lab in spec.labels])
        for j, label in enumerate(spec.labels):
            metrics[f"dice_{label.name}"] = float(dice[:, j].mean())
        metrics["score"] = float(dice.mean())
    return metrics


def calibrate_thresholds(model: torch.nn.Module, data: ArrayData, spec: MedgateSpec) -> None:
    """Set each label's threshold to the validation point with the best Youden index.

    The validation split is separate from the held-out test split, so the test metrics of the
    bundle stay unbiased by this choice.
    """
    model.eval()
    with torch.inference_mode():
        logits = _forward(model, torch.from_numpy(data.x)).numpy()
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    for label in spec.labels:
        truth = data.y[:, label.index].astype(bool)
        if truth.all() or not truth.any():
            continue
        fpr, tpr, thresholds = roc_curve(truth, probs[:, label.index])
        best = int(np.argmax(tpr - fpr))
        # Half-way (in log-odds) to the next lower score: the optimum is a range of thresholds
        # and its upper end, the lowest positive score, would miss the next borderline positive.
        upper = float(np.clip(thresholds[best], 1e-6, 1 - 1e-6))
        lower = float(np.clip(thresholds[min(best + 1, len(thresholds) - 1)], 1e-6, 1 - 1e-6))
        logit = (np.log(upper / (1 - upper)) + np.log(lower / (1 - lower))) / 2
        label.threshold = float(np.clip(1 / (1 + np.exp(-logit)), 0.01, 0.99))


def train_image_model(cfg: TrainConfig, progress: bool = True) -> Bundle:
    """Train, keep the best validation epoch, export the bundle to ``cfg.out``; returns it."""
    torch.set_num_threads(cfg.threads)
    set_determinism(seed=cfg.seed)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = _spec(cfg)
    folders = resolve_splits(cfg.data, run_dir, progress)
    findings = [lab.name for lab in spec.labels] if cfg.task == "classification" else list(FINDINGS)
    train = load_arrays(folders["train"], spec.preprocessing, cfg.task, findings, progress)
    val = (
        load_arrays(folders["val"], spec.preprocessing, cfg.task, findings, progress)
        if "val" in folders
        else train
    )
    model = _network(cfg, spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.task == "classification":
        loss_fn: torch.nn.Module = torch.nn.BCEWithLogitsLoss()
    else:
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    start_epoch, best_score, best_state, step = 0, -1.0, None, 0
    history: list[dict[str, Any]] = []
    ckpt_path = run_dir / CHECKPOINT
    if cfg.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_score = ckpt["epoch"] + 1, ckpt["best_score"]
        best_state, step, history = ckpt["best_state"], ckpt["step"], ckpt["history"]
        log.info("resuming %s at epoch %d", cfg.name, start_epoch)

    writer = SummaryWriter(str(run_dir / "tb"))
    generator = torch.Generator().manual_seed(cfg.seed)
    x_all = torch.from_numpy(train.x)
    y_all = torch.from_numpy(train.y)
    started = time.monotonic()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = torch.randperm(len(x_all), generator=generator)
            losses = []
            batches = range(0, len(order), cfg.batch_size)
            bar = tqdm(
                batches,
                desc=f"{cfg.name} epoch {epoch + 1}/{cfg.epochs}",
                disable=not progress,
                unit="batch",
                leave=False,
            )
            for begin in bar:
                idx = order[begin : begin + cfg.batch_size]
                x, y = x_all[idx], y_all[idx]
                if cfg.task == "segmentation":
                    y = y[:, None]
                optimizer.zero_grad()
                loss = loss_fn(_forward(model, x), y)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                writer.add_scalar("train/loss", losses[-1], step)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                step += 1
                if cfg.max_steps and step >= cfg.max_steps:
                    break
            scheduler.step()
            metrics = evaluate_arrays(model, val, cfg.task, spec)
            for key, value in metrics.items():
                writer.add_scalar(f"val/{key}", value, epoch)
            writer.add_scalar("train/epoch_loss", float(np.mean(losses)), epoch)
            history.append({"epoch": epoch, "loss": float(np.mean(losses)), **metrics})
            if progress:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                tqdm.write(f"{cfg.name} epoch {epoch + 1}: loss={np.mean(losses):.4f} {shown}")
            if metrics["score"] > best_score:
                best_score = metrics["score"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "best_score": best_score,
                    "best_state": best_state,
                    "step": step,
                    "history": history,
                },
            )
            if cfg.max_steps and step >= cfg.max_steps:
                break
    finally:
        writer.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    if cfg.task == "classification" and val is not train:
        calibrate_thresholds(model, val, spec)

    spec.training_data = {
        "source": cfg.data.source
        or (PHANTOM_SOURCE if cfg.data.generate else "labelled DICOM folders"),
        "train_studies": len(train.x),
        "val_studies": len(val.x),
        "train_folder": str(folders["train"]),
        "positives": {lab.name: int(train.y[:, lab.index].sum()) for lab in spec.labels}
        if cfg.task == "classification"
        else {},
        "epochs": len(history),
        "seconds": round(time.monotonic() - started, 1),
    }
    spec.metrics = {"validation": history[-1] if history else {}, "best_val_score": best_score}
    names = ["logits", "maps"] if cfg.network.kind == "map_classifier" else ["logits"]
    example = torch.from_numpy(val.x[:2].copy())
    intended = (
        "Demonstration of the medgate pipeline on synthetic chest radiograph phantoms. "
        "Not a medical device; not for clinical use."
    )
    return write_bundle(
        Path(cfg.out),
        model=model,
        example=example,
        spec=spec,
        output_names=names,
        version=cfg.version,
        description=cfg.description or f"{cfg.name}: {cfg.task} of chest radiographs",
        authors=cfg.authors,
        intended_use=intended,
        opset=cfg.onnx_opset,
        parity_input=val.x[: min(4, len(val.x))],
    )
