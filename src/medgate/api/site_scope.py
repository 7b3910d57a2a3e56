"""What a site-scoped bearer token may see through the HTTP API (``[[sites]].tokens``).

``security.require_scope`` records the site of the token that was presented
(``request.state.token_site``); these helpers answer, for the study routes, which studies that
site owns (``medgate.delivery.sites``: the site whose AE sent the study). Tokens from
``api.tokens``, and an API without tokens, see every study.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import HTTPException, Request

from medgate.delivery.sites import site_for_aes, visible_to
from medgate.store.deliveries import DeliveryStore


def token_site(request: Request) -> str | None:
    """The site the presented token is scoped to, or None (not scoped)."""
    return getattr(request.state, "token_site", None)


def visible_study_uids(request: Request, study_uids: Iterable[str]) -> set[str]:
    """The subset of ``study_uids`` that the presented token may see."""
    uids = list(study_uids)
    site = token_site(request)
    if site is None:
        return set(uids)
    settings = request.app.state.settings
    aes = DeliveryStore(request.app.state.index.engine).calling_aes(uids) if uids else {}
    return {uid for uid in uids if visible_to(site, site_for_aes(settings, aes.get(uid, set())))}


def require_study_visible(request: Request, study_uid: str) -> None:
    """403 when the presented token belongs to another site than the study's."""
    if study_uid not in visible_study_uids(request, [study_uid]):
        raise HTTPException(403, "this token's site does not hold this study")
