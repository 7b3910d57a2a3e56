"""Free TCP ports for listeners that are bound some time after they are chosen.

Why not bind port 0 and take what the kernel gives: that port comes from the ephemeral range,
the range the kernel also takes the *source* ports of outgoing connections from. A port chosen
now and bound seconds later (HAProxy's listeners and ``api.port`` once Ray has started, Orthanc's
and PostgreSQL's ports once the server is up) was sometimes the source port of one of the
hundreds of connections Ray opens in between, and the listener failed with "Address already in
use". Ports below the ephemeral range are never handed out that way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

LISTEN_PORTS = (20000, 29999)
"""Where listener ports are chosen: above most fixed service ports, below Ray Serve's
direct-ingress replica ports (30000-31000) and the kernel's ephemeral range."""


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the source ports of outgoing connections (Linux default)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(taken: frozenset[int] = frozenset()) -> int:
    """A port nothing listens on right now, outside the ephemeral range and not in ``taken``;
    the kernel's choice only if no such port can be found."""
    low, high = ephemeral_port_range()
    ranges = [(LISTEN_PORTS[0], min(LISTEN_PORTS[1], low - 1)), (high + 1, 65535)]
    choices = [r for r in ranges if r[1] - r[0] >= 100]
    rng = random.SystemRandom()
    for _ in range(200):
        if not choices:
            break
        first, last = rng.choice(choices)
        port = rng.randint(first, last)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        return port
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])
