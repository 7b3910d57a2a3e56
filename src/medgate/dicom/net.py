"""Small pieces every SCU of medgate shares: peer addresses, associations (with TLS), statuses."""

from __future__ import annotations

import contextlib
import re
import socket
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from medgate.core.config import Settings
from medgate.dicom import fastpath

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """Parse ``AE@HOST:PORT`` (e.g. ``ORTHANC@10.0.0.5:4242``); ValueError with a hint if bad."""
    match = _PEER.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{text!r} is not AE@HOST:PORT (for example ORTHANC@127.0.0.1:4242)")
    return Peer(match["ae"].strip(), match["host"].strip("[]"), int(match["port"]))


def pacs_peer(settings: Settings) -> Peer:
    return Peer(settings.pacs.ae_title, settings.pacs.host, settings.pacs.port)


def self_peer(settings: Settings) -> Peer:
    """medgate's own listener, as a local SCU reaches it."""
    host = settings.dicom.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return Peer(settings.dicom.ae_title, host, settings.dicom.port)


def scu_ae(settings: Settings) -> AE:
    """An SCU AE calling as ``dicom.ae_title`` with the configured timeouts."""
    fastpath.install()
    ae = AE(ae_title=settings.dicom.ae_title)
    ae.acse_timeout = settings.dicom.acse_timeout
    ae.network_timeout = settings.dicom.network_timeout
    ae.dimse_timeout = settings.dicom.network_timeout
    ae.connection_timeout = min(settings.dicom.acse_timeout, 10.0)
    return ae


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: disable Nagle's algorithm on a DICOM connection.

    DIMSE is request/response with small command PDUs: with Nagle on, a small write waits for the
    peer's delayed ACK (~40 ms on Linux) and a series of small instances crawls. DCMTK does the
    same when TCP_NODELAY=1 is set in its environment.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def associate(ae: AE, settings: Settings, peer: Peer, **kwargs: Any) -> Association:
    """``ae.associate`` to ``peer``, over TLS when ``tls.enabled``."""
    tls = getattr(settings, "tls", None)
    if tls is not None and getattr(tls, "enabled", False):
        from medgate.dicom.tls import client_context

        kwargs["tls_args"] = (client_context(tls), peer.host)
    handlers = list(kwargs.pop("evt_handlers", None) or [])
    handlers.append((evt.EVT_CONN_OPEN, set_nodelay))
    return ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=handlers, **kwargs
    )


def association_failure(assoc: Association) -> str:
    """Why an association did not come up, in words (for logs and the outbox's last_error)."""
    if assoc.is_rejected:
        return "association rejected by the peer"
    # pynetdicom reports a refused TCP connection as an abort too
    return "peer unreachable (connection refused, aborted or timed out)"


SUCCESS_OR_WARNING = {"Success", "Warning"}
