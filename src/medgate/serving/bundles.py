"""The serving side's view of the bundle registry: which bundles exist and how each is served.

The registry (``medgate.models.registry``) owns the bundle format; this module only asks it for
the bundles under ``models.path`` and merges the serving keys of the config (``[models]`` and
``[models.bundles.<name>]``) with what a bundle's metadata says about itself (e.g. a smaller
``max_batch_size`` for a large 3D model). Nothing here names a particular model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgate.core.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingOptions:
    """How one bundle's deployment is configured."""

    max_batch_size: int
    batch_wait_timeout_s: float
    num_replicas: int
    max_replicas: int
    num_cpus: float
    num_gpus: float
    target_ongoing_requests: float

    def autoscaling_config(self) -> dict[str, Any] | None:
        if self.max_replicas <= self.num_replicas:
            return None
        return {
            "min_replicas": self.num_replicas,
            "initial_replicas": self.num_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


def bundle_name(bundle: Any) -> str:
    return str(bundle.name)


def bundle_task(bundle: Any) -> str:
    return str(getattr(bundle, "task", None) or _meta(bundle).get("task") or "unknown")


def _meta(bundle: Any) -> dict[str, Any]:
    meta = getattr(bundle, "metadata", None)
    if isinstance(meta, dict):
        return meta
    dump = getattr(meta, "model_dump", None)
    return dict(dump()) if callable(dump) else {}


def _first(bundle: Any, *names: str) -> Any:
    """The first of ``names`` set on the bundle object or in its metadata."""
    meta = _meta(bundle)
    for name in names:
        value = getattr(bundle, name, None)
        if value is None:
            value = meta.get(name)
        if value is None and isinstance(meta.get("medgate"), dict):
            value = meta["medgate"].get(name)
        if value is not None:
            return value
    return None


def serving_options(settings: Settings, bundle: Any) -> ServingOptions:
    """Config defaults < bundle metadata (batch size cap) < ``[models.bundles.<name>]``."""
    models = settings.models
    override = models.bundles.get(bundle_name(bundle))
    max_batch = models.max_batch_size
    bundle_cap = _first(bundle, "max_batch_size")
    if isinstance(bundle_cap, int) and bundle_cap >= 1:
        max_batch = min(max_batch, bundle_cap)
    options: dict[str, Any] = {
        "max_batch_size": max_batch,
        "batch_wait_timeout_s": models.batch_wait_timeout_s,
        "num_replicas": models.num_replicas,
        "max_replicas": models.max_replicas,
        "num_cpus": models.num_cpus,
        "num_gpus": models.num_gpus,
        "target_ongoing_requests": models.target_ongoing_requests,
    }
    if override is not None:
        options.update(override.model_dump(exclude_none=True))
    return ServingOptions(**options)


def discover(settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """Bundles under ``models.path`` by name, plus the registry's problems (bad bundles, and
    bundles whose inference config ``models.trusted`` does not approve)."""
    bundles, problems, _ = discover_all(settings)
    return bundles, problems


def discover_all(settings: Settings) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """``discover`` plus the bundles left out only for want of approval: name -> reason (the
    gateway reports them as not served, with the ``models.trusted`` entry to approve)."""
    from medgate.models.registry import discover_bundles

    path = Path(settings.models.path)
    if not path.exists():
        return {}, [f"{path}: models folder not found"], {}
    found, problems = discover_bundles(path, settings.models.trusted)
    bundles = {bundle_name(b): b for b in found}
    unapproved = {
        p.trust_entry.rsplit("@", 1)[0]: p.reason for p in problems if p.trust_entry is not None
    }
    return bundles, [str(p) for p in problems], unapproved


def is_image_model(settings: Settings, bundle: Any) -> bool:
    """Image models get a Serve deployment; the triage bundle runs on their results instead."""
    return bundle_name(bundle) != settings.routing.triage_bundle and bundle_task(bundle) not in (
        "triage",
        "tabular",
    )


def describe(bundle: Any) -> dict[str, Any]:
    """What ``GET /api/v1/models`` shows: name, version, task, inputs, labels, metrics."""
    spec = getattr(bundle, "spec", None)
    summary = getattr(bundle, "summary", None)
    if spec is not None and callable(summary):
        data = _jsonable(summary())
        data.pop("path", None)
        data["inputs"] = _jsonable(spec.preprocessing)
        data["labels"] = [_jsonable(label) for label in spec.labels]
        data["measurements"] = [_jsonable(m) for m in spec.measurements]
        data["intended_use"] = bundle.metadata.get("intended_use") or bundle.description
        return data
    labels = _first(bundle, "labels", "outputs") or []
    if isinstance(labels, dict):
        labels = (
            list(labels.values())
            if all(isinstance(v, dict) for v in labels.values())
            else [{"label": k, **({} if not isinstance(v, dict) else v)} for k, v in labels.items()]
        )
    return {
        "name": bundle_name(bundle),
        "version": str(_first(bundle, "version") or ""),
        "task": bundle_task(bundle),
        "inputs": _jsonable(_first(bundle, "inputs", "input_spec", "network_data_format") or {}),
        "labels": _jsonable(labels),
        "metrics": _jsonable(_first(bundle, "metrics", "performance") or {}),
        "intended_use": _first(bundle, "intended_use"),
    }


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
