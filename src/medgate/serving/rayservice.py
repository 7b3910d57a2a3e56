"""The Serve application as Ray's config files name it (KubeRay ``RayService``, ``serve run``).

``medgate serve`` builds and runs the application itself; a Ray cluster that runs Serve from a
config file (``serveConfigV2`` of a KubeRay RayService, or ``serve deploy config.yaml``) needs an
import path instead. This builder is that path: ``medgate.serving.rayservice:build``. It reads
the same configuration as the CLI (``args.config`` or ``MEDGATE_CONFIG``, plus ``MEDGATE_*``
environment) and returns the application ``medgate serve`` would deploy: the HTTP ingress and
one deployment per imaging bundle. deploy/k8s/rayservice.yaml names it; tests/deploy keep that
name importable.
"""

from __future__ import annotations

from typing import Any

from medgate.config import load_settings

IMPORT_PATH = "medgate.serving.rayservice:build"


def build(args: dict[str, Any] | None = None) -> Any:
    """Ray Serve application builder: ``args`` may hold ``config`` (a TOML file path) and
    per-section overrides (e.g. ``{"models": {"path": "/models"}}``)."""
    from medgate.serving.deployments import build_application

    args = dict(args or {})
    config = args.pop("config", None)
    settings = load_settings(config, **args)
    return build_application(settings)


__all__ = ["IMPORT_PATH", "build"]
