"""What ``medgate serve`` checks in its settings before it opens a port: secure by default.

A gateway holds patients' results. The audit key that ships as the default is public, so a
gateway keyed with it hashes identifiers that anybody can re-identify; and an HTTP API reachable
from the network without tokens serves those results to anyone who asks. Both are refused (the
second unless ``api.allow_anonymous`` says it is wanted, then it is warned about at every start).
A DICOM listener reachable from the network that accepts any calling AE is warned about. The
refusals are ``medgate serve``'s: ``medgate demo`` runs on loopback with the default key, and
tests set ``audit.hash_key``.
"""

from __future__ import annotations

import ipaddress

from medgate.core.config import DEFAULT_HASH_KEY, Settings


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ::1).

    A name other than ``localhost`` may resolve to anything, so it counts as reachable.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def has_api_authentication(settings: Settings) -> bool:
    """Whether any caller of the HTTP API must show a credential (a token or a client JWT)."""
    site_tokens = any(site.tokens for site in settings.sites)
    return bool(settings.api.tokens or settings.api.cds_jwt_issuers or site_tokens)


def serve_refusals(settings: Settings, api_reachable: bool | None = None) -> list[str]:
    """Reasons not to start, each saying how to fix it; empty when the gateway may start.

    ``api_reachable`` overrides what ``api.host`` says: an application a Ray cluster deploys
    from its config file (KubeRay RayService, ``serve deploy``) is served by the cluster's HTTP
    proxy, which listens wherever the cluster says, so it is judged as reachable.
    """
    reachable = not is_loopback(settings.api.host) if api_reachable is None else api_reachable
    reasons = []
    if settings.audit.hash_key == DEFAULT_HASH_KEY:
        reasons.append(
            f"audit.hash_key is the public default {DEFAULT_HASH_KEY!r}: set your own secret key "
            "([audit] hash_key in the config file, or MEDGATE_AUDIT__HASH_KEY=$(openssl rand "
            "-hex 32)) and keep it: it keys the audit trail and the identifiers in logs"
        )
    if reachable and not has_api_authentication(settings) and not settings.api.allow_anonymous:
        reasons.append(
            f"api.host {settings.api.host!r} is reachable from the network and the API has no "
            "tokens and no CDS JWT issuers, so anyone could read results: set api.tokens "
            '(MEDGATE_API__TOKENS=\'{"<long random token>": ["admin"]}\'), or listen on '
            "127.0.0.1, or set api.allow_anonymous = true to serve it open on purpose"
        )
    return reasons


def anonymous_api_warning(settings: Settings) -> str | None:
    """The line ``medgate serve`` prints at every start while an open API is allowed."""
    if (
        settings.api.allow_anonymous
        and not is_loopback(settings.api.host)
        and not has_api_authentication(settings)
    ):
        return (
            f"api.allow_anonymous: the HTTP API on {settings.api.host}:{settings.api.port} "
            "answers anyone who reaches it, without a token"
        )
    return None


def open_dicom_warning(settings: Settings) -> str | None:
    """The line a DICOM listener logs at start when any network peer may store into it."""
    if not is_loopback(settings.dicom.host) and not settings.dicom.allowed_calling_aes:
        return (
            f"the DICOM listener on {settings.dicom.host}:{settings.dicom.port} accepts any "
            "calling AE title: list the modalities and PACS in dicom.allowed_calling_aes"
        )
    return None
