"""Serving options per bundle: config defaults, the bundle's own cap, per-bundle overrides."""

from __future__ import annotations

from pathlib import Path

from helpers import write_bundle

from medgate.core.config import load_settings
from medgate.models.bundle import Bundle
from medgate.serving.bundles import describe, is_image_model, serving_options


def test_options_merge_config_bundle_cap_and_override(tmp_path: Path) -> None:
    capped = Bundle.load(write_bundle(tmp_path, "capped", max_batch=2))
    plain = Bundle.load(write_bundle(tmp_path, "plain"))
    settings = load_settings(
        None,
        models={
            "max_batch_size": 8,
            "num_cpus": 0.5,
            "bundles": {"plain": {"num_gpus": 0.25, "max_replicas": 4, "batch_wait_timeout_s": 0}},
        },
    )
    a = serving_options(settings, capped)
    assert (a.max_batch_size, a.num_cpus, a.autoscaling_config()) == (2, 0.5, None)
    b = serving_options(settings, plain)
    assert (b.max_batch_size, b.num_gpus, b.batch_wait_timeout_s) == (8, 0.25, 0)
    assert b.autoscaling_config() == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 4.0,
    }
    assert is_image_model(settings, plain)
    info = describe(plain)
    assert info["name"] == "plain" and "path" not in info
    assert info["labels"][0]["code"]["value"] == "27925004"
