"""The training loop of the ``ct_nodule_seg`` demo bundle: patches, loss, checkpoints, tracking.

Kept apart from ``ct_nodule`` (data, export, evaluation) so that the recipe can be read in one
place. The loop is

- deterministic: one CPU thread, deterministic kernels, weights seeded with
  ``torch.manual_seed(0)``, patches and augmentations drawn from ``numpy.random.default_rng``;
  the caller's torch settings are restored afterwards;
- resumable: every ``checkpoint_every`` steps (and at the end) ``run_dir/checkpoint.pt`` holds
  the step, model, optimiser, scheduler and the patch generator's state, written atomically. A
  resumed run therefore draws the same patches as an uninterrupted one and ends with the same
  weights, bit for bit;
- tracked: TensorBoard scalars in ``run_dir/tb`` (train loss and learning rate each step, and on
  the validation volumes every ``val_every`` steps: loss, voxel Dice, the share of nodules whose
  centre region reaches probability 0.5, and the highest probability away from every nodule,
  a false-positive proxy), the same local tracker as the radiograph trainer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from scipy import ndimage
from tensorboardX import SummaryWriter
from tqdm import tqdm

from medgate.models.networks import build_network
from medgate.training.checkpoints import save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# Network input is HU in -1000..400 scaled to 0..1: soft tissue (40 HU) ~0.74, lung ~0.11.
DENSE = 0.5  # >= -300 HU: vessel, nodule, chest wall
LUNG_MEAN = 0.35  # a 5^3 neighbourhood mostly lung


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights (recorded in the checkpoint)."""

    steps: int = 2400
    batch: int = 4
    patch: tuple[int, int, int] = (16, 48, 48)
    lr: float = 3e-3
    # Nodule voxels weigh more in the loss: a 4-6 mm nodule is 1-3 voxels at the network grid.
    nodule_weight: float = 40.0
    # Nodule-balanced cross entropy: each nodule's voxels weigh at least nodule_mass / voxels,
    # so a 1-3 voxel nodule counts about as much as a 15 mm one (0: plain class weights).
    nodule_mass: float = 6000.0
    lambda_dice: float = 0.5  # batch Dice alone is ruled by the large nodules
    loss: str = "dice_ce"  # or "dice_focal"
    nodule_fraction: float = 0.75  # patches centred (with jitter) on a nodule
    jitter: int = 8
    hard_negative_fraction: float = 0.5  # of the other patches: centred on a vessel in a lung
    flip_axes: tuple[int, ...] = (1, 2, 3)  # patch axes (1 z, 2 y, 3 x) flipped at random
    channels: tuple[int, ...] = (12, 24, 48)
    strides: tuple[int, ...] = (2, 2)
    seed: int = 7

    def network(self) -> dict[str, Any]:
        return {
            "spatial_dims": 3,
            "out_channels": 2,
            "channels": tuple(self.channels),
            "strides": tuple(self.strides),
        }

    def as_dict(self) -> dict[str, Any]:
        """The recipe as JSON-like values (tuples as lists), as checkpoints and metadata hold it."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass
class TrainArrays:
    """Training volumes at the network grid: inputs (N, 1, D, H, W) float32, labels (N, D, H, W)
    uint8, nodule centre voxels per volume, hard-negative centres (dense voxels in a lung), and
    the label's connected components (N, D, H, W) with each component's voxel count."""

    xs: np.ndarray
    ys: np.ndarray
    centres: list[np.ndarray]
    negatives: list[np.ndarray]
    parts: np.ndarray
    part_sizes: list[np.ndarray]

    def weights(self, i: int, recipe: Recipe) -> np.ndarray:
        """Voxel weight per component of volume ``i`` (index 0: background, weight 1)."""
        sizes = self.part_sizes[i].astype(np.float64)
        nodule = np.maximum(recipe.nodule_weight, recipe.nodule_mass / np.maximum(sizes, 1.0))
        return np.concatenate([[1.0], nodule]).astype(np.float32)


def hard_negative_centres(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Voxels (K, 3) that are dense, surrounded by lung and not nodule: vessel cross sections,
    the structures a small nodule is confused with."""
    local = ndimage.uniform_filter(x[0], size=5, mode="nearest")
    near_nodule = ndimage.binary_dilation(y > 0, iterations=2)
    return np.argwhere((x[0] >= DENSE) & (local <= LUNG_MEAN) & ~near_nodule)


def make_arrays(items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> TrainArrays:
    """Stack (input, label, centres) triples into ``TrainArrays``."""
    xs = np.stack([a[0] for a in items]).astype(np.float32)
    ys = np.stack([a[1] for a in items]).astype(np.uint8)
    labelled = [ndimage.label(y > 0, structure=np.ones((3, 3, 3), bool)) for y in ys]
    return TrainArrays(
        xs=xs,
        ys=ys,
        centres=[a[2] for a in items],
        negatives=[hard_negative_centres(x, y) for x, y in zip(xs, ys, strict=True)],
        parts=np.stack([lab for lab, _ in labelled]).astype(np.uint8),
        part_sizes=[np.bincount(lab.ravel(), minlength=n + 1)[1:] for lab, n in labelled],
    )


def draw_patches(
    data: TrainArrays, recipe: Recipe, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of patches: ``nodule_fraction`` centred (with jitter) on a nodule drawn
    uniformly per nodule (a foreground voxel would favour 15 mm nodules ~50:1 over 4 mm ones),
    some of the rest on hard negatives, the rest anywhere; random flips. Returns inputs, labels
    and voxel loss weights."""
    bx, by, bw = [], [], []
    patch = recipe.patch
    for _ in range(recipe.batch):
        i = int(rng.integers(len(data.xs)))
        shape = data.ys[i].shape
        centres, negatives = data.centres[i], data.negatives[i]
        if len(centres) and rng.random() < recipe.nodule_fraction:
            jitter = rng.integers(-recipe.jitter, recipe.jitter + 1, 3)
            centre = centres[int(rng.integers(len(centres)))] + jitter
        elif len(negatives) and rng.random() < recipe.hard_negative_fraction:
            centre = negatives[int(rng.integers(len(negatives)))]
        else:
            centre = np.array([rng.integers(0, s) for s in shape])
        z, r, c = (
            int(np.clip(v - p // 2, 0, s - p)) for v, p, s in zip(centre, patch, shape, strict=True)
        )
        px = data.xs[i][:, z : z + patch[0], r : r + patch[1], c : c + patch[2]]
        py = data.ys[i][None, z : z + patch[0], r : r + patch[1], c : c + patch[2]]
        pw = data.weights(i, recipe)[
            data.parts[i][None, z : z + patch[0], r : r + patch[1], c : c + patch[2]]
        ]
        for axis in recipe.flip_axes:
            if rng.random() < 0.5:
                px, py, pw = np.flip(px, axis), np.flip(py, axis), np.flip(pw, axis)
        bx.append(np.ascontiguousarray(px))
        by.append(np.ascontiguousarray(py, dtype=np.int64))
        bw.append(np.ascontiguousarray(pw))
    return tuple(torch.from_numpy(np.stack(b)) for b in (bx, by, bw))  # type: ignore[return-value]


class NoduleLoss(torch.nn.Module):
    """Batch Dice (class weights) plus cross entropy; with ``nodule_mass`` the cross entropy
    takes voxel weights (``TrainArrays.weights``) instead of class weights. Called as
    ``loss(logits, labels, voxel_weights)``."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        weight = torch.tensor([1.0, recipe.nodule_weight])
        self.balanced = recipe.nodule_mass > 0
        self.lambda_dice = recipe.lambda_dice
        if recipe.loss == "dice_focal":
            self.base: torch.nn.Module = DiceFocalLoss(
                to_onehot_y=True,
                softmax=True,
                batch=True,
                weight=weight,
                lambda_dice=recipe.lambda_dice,
            )
        elif recipe.loss == "dice_ce":
            self.base = DiceCELoss(
                to_onehot_y=True,
                softmax=True,
                batch=True,
                weight=weight,
                lambda_dice=recipe.lambda_dice,
            )
        else:
            raise ValueError(f"unknown loss {recipe.loss!r}; known: dice_ce, dice_focal")
        if self.balanced and recipe.loss != "dice_ce":
            raise ValueError("nodule_mass needs loss dice_ce")
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True, weight=weight)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        if not self.balanced:
            return self.base(logits, labels)
        ce = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none")
        w = weights[:, 0]
        return self.lambda_dice * self.dice(logits, labels) + (w * ce).sum() / w.sum()


def validate(
    model: torch.nn.Module, val: TrainArrays, loss_fn: torch.nn.Module, recipe: Recipe
) -> dict[str, float]:
    """Whole-volume metrics on the validation arrays (model left in eval mode)."""
    model.eval()
    losses, inter, total, hits, count, fp_peak = [], 0.0, 0.0, 0, 0, []
    with torch.inference_mode():
        for i, (x, y, centres) in enumerate(zip(val.xs, val.ys, val.centres, strict=True)):
            logits = model(torch.from_numpy(x[None]))
            target = torch.from_numpy(y[None, None].astype(np.int64))
            weights = torch.from_numpy(val.weights(i, recipe)[val.parts[i]][None, None])
            losses.append(float(loss_fn(logits, target, weights)))
            prob = torch.softmax(logits, 1)[0, 1].numpy()
            pred, truth = prob >= 0.5, y > 0
            inter += float((pred & truth).sum())
            total += float(pred.sum() + truth.sum())
            for k, r, c in centres:
                count += 1
                hits += int(
                    prob[max(k - 1, 0) : k + 2, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].max()
                    >= 0.5
                )
            away = ~ndimage.binary_dilation(truth, iterations=3)
            fp_peak.append(float(prob[away].max(initial=0.0)))
    return {
        "loss": float(np.mean(losses)),
        "dice": 2 * inter / total if total else 1.0,
        "nodule_hit_rate": hits / count if count else 1.0,
        "fp_peak_mean": float(np.mean(fp_peak)),
    }


def train(
    data: TrainArrays,
    recipe: Recipe,
    run_dir: Path,
    *,
    progress: bool = True,
    resume: bool = False,
    stop_after: int | None = None,
    checkpoint_every: int = 200,
    val: TrainArrays | None = None,
    val_every: int = 400,
) -> torch.nn.Module:
    """Train a 3D UNet by ``recipe``; returns the network in eval mode.

    ``resume`` continues from ``run_dir/checkpoint.pt`` when it exists (its recipe must match);
    ``stop_after`` ends the run after that many steps in total, checkpoint written (what an
    interruption leaves behind; a test uses it).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT
    torch.manual_seed(0)  # the same initial weights whatever ran before
    model = build_network("unet", **recipe.network())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.steps
    )
    loss_fn = NoduleLoss(recipe)
    rng = np.random.default_rng(recipe.seed)
    start = 0
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["recipe"] != recipe.as_dict():
            raise ValueError(
                f"{ckpt_path} was written by another recipe ({ckpt['recipe']}); "
                "remove it or train without resume"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng.bit_generator.state = ckpt["rng"]
        start = int(ckpt["step"])
        log.info("resuming ct_nodule_seg training at step %d of %d", start, recipe.steps)
    end = recipe.steps if stop_after is None else min(recipe.steps, stop_after)

    def checkpoint(step: int) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "recipe": recipe.as_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng.bit_generator.state,
            },
        )

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start if start else None)
    # Bit-reproducible on CPU: one thread (also the fastest on a shared 2-core machine) and
    # deterministic kernels; the caller's settings are restored afterwards.
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model.train()
        bar = tqdm(
            range(start, end),
            desc="ct_nodule_seg train",
            disable=not progress,
            unit="step",
            initial=start,
            total=recipe.steps,
        )
        for step in bar:
            x, y, w = draw_patches(data, recipe, rng)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y, w)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            writer.add_scalar("train/loss", value, step)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{value:.4f}")
            done = step + 1
            if val is not None and (done % val_every == 0 or done == recipe.steps):
                for key, metric in validate(model, val, loss_fn, recipe).items():
                    writer.add_scalar(f"val/{key}", metric, done)
                model.train()
            if done % checkpoint_every == 0 or done == end:
                checkpoint(done)
    finally:
        writer.close()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)
    return model.eval()
