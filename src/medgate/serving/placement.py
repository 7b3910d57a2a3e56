"""Fitting the model replicas onto what Ray has, before anything is deployed.

Each model replica asks Ray for ``models.num_cpus`` (0.5 by default). With more image bundles
than that fits on the machine (five bundles on two cores), the requests took every CPU, the API
ingress could never be scheduled and ``medgate serve`` waited for it forever. So the plan:

* the ingress's share (``INGRESS_CPUS``) is set aside first;
* bundles with their own ``[models.bundles.<name>]`` num_cpus / num_gpus keep what the operator
  asked, if it fits, else they are left out with the reason;
* the other bundles share the rest: when their default requests do not fit, every replica asks
  an equal fraction of what is left (replicas are I/O- and batch-bound most of the time; Ray's
  CPU figures are reservations, not limits), down to ``MIN_REPLICA_CPUS``; below that, bundles
  are left out (by name order) with the reason.

A left-out bundle is reported (``/readyz``, ``medgate models list``, the log) and the gateway
comes up without it. The figures are Ray's totals (``ray.cluster_resources()``), or for
``medgate models list`` the CPUs a local Ray would get.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from medgate.core.config import Settings
from medgate.serving.bundles import ServingOptions, serving_options

INGRESS_CPUS = 0.1
MIN_REPLICA_CPUS = 0.05


@dataclass(frozen=True)
class Placement:
    """The serving options of the bundles that fit, and the reasons of those that do not."""

    options: dict[str, ServingOptions] = field(default_factory=dict)
    unplaced: dict[str, str] = field(default_factory=dict)
    cpus: float = 0.0
    gpus: float = 0.0

    def note(self, name: str) -> str:
        """One line for ``medgate models list``."""
        if name in self.unplaced:
            return f"not served: {self.unplaced[name]}"
        options = self.options.get(name)
        if options is None:
            return ""
        return f"{options.num_replicas} x {options.num_cpus:g} CPU" + (
            f", {options.num_gpus:g} GPU" if options.num_gpus else ""
        )


def _explicit(settings: Settings, name: str, key: str) -> bool:
    override = settings.models.bundles.get(name)
    return override is not None and getattr(override, key) is not None


def plan_placement(
    settings: Settings,
    bundles: dict[str, Any],
    cpus: float,
    gpus: float = 0.0,
    reserved_cpus: float = INGRESS_CPUS,
) -> Placement:
    """Serving options sized to ``cpus`` / ``gpus`` for the image ``bundles`` (by name)."""
    wanted = {name: serving_options(settings, bundle) for name, bundle in sorted(bundles.items())}
    unplaced: dict[str, str] = {}
    cpu_left = cpus - reserved_cpus
    gpu_left = gpus
    for name, asked_for in wanted.items():
        need = asked_for.num_gpus * asked_for.num_replicas
        if need > gpu_left + 1e-9:
            unplaced[name] = f"asks {need:g} GPU, Ray has {gpu_left:g} left of {gpus:g}"
        else:
            gpu_left -= need
    fixed = [n for n in wanted if n not in unplaced and _explicit(settings, n, "num_cpus")]
    for name in fixed:
        need = wanted[name].num_cpus * wanted[name].num_replicas
        if need > cpu_left + 1e-9:
            unplaced[name] = (
                f"[models.bundles.{name}] asks {need:g} CPU, {max(cpu_left, 0):g} left of "
                f"{cpus:g} after the API"
            )
        else:
            cpu_left -= need
    shared = [n for n in wanted if n not in unplaced and n not in fixed]
    sized = {n: wanted[n] for n in fixed if n not in unplaced}
    asked = sum(wanted[n].num_cpus * wanted[n].num_replicas for n in shared)
    if asked <= cpu_left + 1e-9:
        sized.update({n: wanted[n] for n in shared})
    else:
        while shared:
            replicas = sum(wanted[n].num_replicas for n in shared)
            share = int(1000 * max(cpu_left, 0) / replicas) / 1000
            if share >= MIN_REPLICA_CPUS:
                sized.update({n: replace(wanted[n], num_cpus=share) for n in shared})
                break
            dropped = shared.pop()
            unplaced[dropped] = (
                f"no CPU left: {cpus:g} CPU cannot give every bundle's replica "
                f"{MIN_REPLICA_CPUS:g} CPU"
            )
    return Placement(dict(sorted(sized.items())), unplaced, cpus, gpus)


def ray_resources() -> tuple[float, float]:
    """CPUs and GPUs of the connected Ray cluster (all nodes)."""
    import ray

    total = ray.cluster_resources()
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))


def local_resources(settings: Settings) -> tuple[float, float]:
    """What a local Ray started by ``medgate serve`` would have (for ``medgate models list``)."""
    import os

    cpus = float(settings.serving.ray_num_cpus or os.cpu_count() or 1)
    try:
        import torch

        gpus = float(torch.cuda.device_count())
    except ImportError:
        gpus = 0.0
    return cpus, gpus


__all__ = [
    "INGRESS_CPUS",
    "MIN_REPLICA_CPUS",
    "Placement",
    "local_resources",
    "plan_placement",
    "ray_resources",
]
