"""Serving options per bundle: config defaults, the bundle's own cap, per-bundle overrides."""

from __future__ import annotations

from pathlib import Path

from tests.support.serving import write_bundle

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


def test_placement_sizes_default_replicas_to_the_cpus_ray_reports(tmp_path: Path) -> None:
    """Five bundles asking 0.5 CPU each on two CPUs: measured before, the ingress never got its
    0.1 CPU and `medgate serve` hung. Now the ingress's share is set aside and the five
    replicas share the rest."""
    from medgate.serving.placement import INGRESS_CPUS, plan_placement

    bundles = {f"b{i}": Bundle.load(write_bundle(tmp_path, f"b{i}")) for i in range(5)}
    settings = load_settings(None, models={"num_cpus": 0.5})
    placement = plan_placement(settings, bundles, cpus=2.0, gpus=0.0)
    assert placement.unplaced == {}
    cpus = {name: o.num_cpus for name, o in placement.options.items()}
    assert set(cpus) == set(bundles)
    assert sum(cpus.values()) + INGRESS_CPUS <= 2.0
    assert all(c == cpus["b0"] for c in cpus.values()) and cpus["b0"] >= 0.37
    assert placement.note("b0") == "1 x 0.38 CPU"
    roomy = plan_placement(settings, bundles, cpus=16.0)  # enough: the config's ask stands
    assert {o.num_cpus for o in roomy.options.values()} == {0.5}


def test_placement_leaves_out_what_cannot_fit_and_says_why(tmp_path: Path) -> None:
    from medgate.serving.placement import MIN_REPLICA_CPUS, plan_placement

    bundles = {n: Bundle.load(write_bundle(tmp_path, n)) for n in ("big", "gpu", "small")}
    settings = load_settings(
        None,
        models={"bundles": {"big": {"num_cpus": 4.0}, "gpu": {"num_gpus": 1.0}}},
    )
    placement = plan_placement(settings, bundles, cpus=2.0, gpus=0.0)
    assert set(placement.options) == {"small"}
    assert "asks 4 CPU" in placement.unplaced["big"]
    assert "asks 1 GPU" in placement.unplaced["gpu"]
    assert placement.note("big").startswith("not served: [models.bundles.big] asks 4 CPU")
    many = {f"m{i:02d}": bundles["small"] for i in range(40)}
    crowded = plan_placement(load_settings(None), many, cpus=1.0)
    assert len(crowded.options) == int((1.0 - 0.1) / MIN_REPLICA_CPUS)
    assert all(o.num_cpus >= MIN_REPLICA_CPUS for o in crowded.options.values())
    assert all("no CPU left" in reason for reason in crowded.unplaced.values())
