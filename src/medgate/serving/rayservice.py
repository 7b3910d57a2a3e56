"""The Serve applications as Ray's config files name them (KubeRay ``RayService``, ``serve run``).

``medgate serve`` builds and runs the applications itself; a Ray cluster that runs Serve from a
config file (``serveConfigV2`` of a KubeRay RayService, or ``serve deploy config.yaml``) needs
import paths instead. These builders are those paths. Both read the same configuration as the
CLI (``args.config`` or ``MEDGATE_CONFIG``, plus ``MEDGATE_*`` environment):

* ``medgate.serving.rayservice:build`` returns the HTTP API application (name ``medgate``,
  route prefix ``/``), knowing the image bundles under ``models.path``;
* ``medgate.serving.rayservice:build_model`` with ``args.bundle`` returns that bundle's model
  application (name ``medgate-model-<bundle>``, route prefix ``/api/v1/models/<bundle>``), so
  each model can be rolled out on its own.

deploy/k8s/rayservice.yaml names them; tests/deploy keep those names importable.

Both refuse what ``medgate serve`` refuses (``core.serve_checks``: the public default audit key,
an API without tokens), judging the API reachable from the network, as a cluster's HTTP proxy is:
the error reaches the RayService's status instead of an open gateway.
"""

from __future__ import annotations

from typing import Any

from medgate.core.config import Settings, load_settings
from medgate.core.serve_checks import serve_refusals

IMPORT_PATH = "medgate.serving.rayservice:build"
MODEL_IMPORT_PATH = "medgate.serving.rayservice:build_model"


def _checked_settings(args: dict[str, Any]) -> Settings:
    config = args.pop("config", None)
    settings = load_settings(config, **args)
    refusals = serve_refusals(settings, api_reachable=True)
    if refusals:
        raise ValueError("medgate will not build its Serve application: " + "; ".join(refusals))
    return settings


def build(args: dict[str, Any] | None = None) -> Any:
    """The API application: ``args`` may hold ``config`` (a TOML file path) and per-section
    overrides (e.g. ``{"models": {"path": "/models"}}``)."""
    from medgate.serving.deployments import build_api_application, image_bundles

    settings = _checked_settings(dict(args or {}))
    return build_api_application(settings, list(image_bundles(settings)))


def build_model(args: dict[str, Any] | None = None) -> Any:
    """One bundle's model application: ``args.bundle`` names it, the rest as for ``build``."""
    from medgate.serving.deployments import build_model_application, image_bundles

    args = dict(args or {})
    bundle = args.pop("bundle", None)
    settings = _checked_settings(args)
    bundles = image_bundles(settings)
    if bundle not in bundles:
        known = ", ".join(bundles) or "none"
        raise ValueError(
            f"args.bundle = {bundle!r} is not an image bundle under {settings.models.path} "
            f"(image bundles: {known})"
        )
    return build_model_application(settings, bundles[bundle])


__all__ = ["IMPORT_PATH", "MODEL_IMPORT_PATH", "build", "build_model"]
