"""Training pieces of ct_nodule_seg: labels keep every nodule, and training is bit-reproducible."""

from __future__ import annotations

from pathlib import Path

import torch

from medgate.datasets.ct_phantom import generate_ct_phantom
from medgate.models.networks import build_network
from medgate.training.ct_nodule import NETWORK, _network_arrays, nodule_spec, train_network


def test_every_nodule_has_a_label_voxel_at_the_network_grid() -> None:
    """Resizing a thresholded mask can erase a 4 mm nodule; the centre voxel is kept."""
    spec = nodule_spec()
    for seed in (11, 12, 13):
        phantom = generate_ct_phantom(seed, nodules=3)
        _, label, centres = _network_arrays(phantom, spec)
        assert len(centres) == len(phantom.nodules)
        for k, r, c in centres:
            assert label[k, r, c] == 1


def test_training_is_bit_reproducible(tmp_path: Path) -> None:
    spec = nodule_spec()
    phantoms = [generate_ct_phantom(seed, nodules=1) for seed in (21, 22)]
    threads = torch.get_num_threads()
    weights = []
    for run in ("a", "b"):
        model = train_network(phantoms, spec, 3, tmp_path / run, progress=False)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert torch.get_num_threads() == threads  # the caller's settings are restored
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    torch.manual_seed(0)  # the initial weights train_network starts from
    fresh = build_network("unet", **NETWORK).state_dict()  # type: ignore[arg-type]
    assert any(not torch.equal(fresh[k], weights[0][k]) for k in fresh)  # training moved them
