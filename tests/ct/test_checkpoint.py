"""The CT trainer's checkpoints: an interrupted run resumes to the same weights as an
uninterrupted one, and the local experiment tracker gets training and validation scalars."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboardX.proto.event_pb2 import Event

from medgate.datasets.ct_phantom import generate_ct_phantom
from medgate.training.ct_nodule import nodule_spec, train_arrays
from medgate.training.ct_train import CHECKPOINT, Recipe, train

RECIPE = Recipe(steps=6, batch=2, hard_negative_fraction=0.5, flip_axes=(1, 2, 3))


@pytest.fixture(scope="module")
def arrays():
    spec = nodule_spec()
    train_set = train_arrays([generate_ct_phantom(s, nodules=1) for s in (41, 42)], spec)
    val_set = train_arrays([generate_ct_phantom(43, nodules=1)], spec)
    return train_set, val_set


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files (TFRecord: length u64, crc u32, data, crc u32)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        raw, at = path.read_bytes(), 0
        while at < len(raw):
            length = struct.unpack("<Q", raw[at : at + 8])[0]
            event = Event.FromString(raw[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_interrupted_run_resumes_to_the_same_weights(arrays, tmp_path: Path) -> None:
    train_set, val_set = arrays
    whole = train(train_set, RECIPE, tmp_path / "whole", progress=False, val=val_set, val_every=3)
    run = tmp_path / "interrupted"
    train(train_set, RECIPE, run, progress=False, stop_after=4, checkpoint_every=2)
    saved = torch.load(run / CHECKPOINT, weights_only=False)
    assert saved["step"] == 4
    resumed = train(train_set, RECIPE, run, progress=False, resume=True)
    assert torch.load(run / CHECKPOINT, weights_only=False)["step"] == RECIPE.steps
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    # a fresh run from the same start differs from the interrupted one's first half
    assert not all(
        torch.equal(v, saved["model"][k])
        for k, v in whole.state_dict().items()
        if v.is_floating_point()
    )


def test_resume_refuses_a_checkpoint_of_another_recipe(arrays, tmp_path: Path) -> None:
    train_set, _ = arrays
    train(train_set, RECIPE, tmp_path, progress=False, stop_after=2)
    other = Recipe(steps=6, batch=2, lr=1e-3)
    with pytest.raises(ValueError, match="another recipe"):
        train(train_set, other, tmp_path, progress=False, resume=True)


def test_tracker_gets_training_and_validation_scalars(arrays, tmp_path: Path) -> None:
    train_set, val_set = arrays
    train(train_set, RECIPE, tmp_path, progress=False, val=val_set, val_every=3)
    scalars = _scalars(tmp_path)
    assert [step for step, _ in scalars["train/loss"]] == list(range(RECIPE.steps))
    assert all(np.isfinite(v) for _, v in scalars["train/loss"])
    for key in ("val/loss", "val/dice", "val/nodule_hit_rate", "val/fp_peak_mean"):
        assert [step for step, _ in scalars[key]] == [3, 6], key
    assert all(0.0 <= v <= 1.0 for _, v in scalars["val/dice"])
