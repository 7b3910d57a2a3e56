"""Which primary-care site a study belongs to, and what a site-scoped token may see.

A study belongs to the ``[[sites]]`` entry whose ``calling_aes`` include an AE title that sent
one of its instances (``instances.calling_ae``); the first such site in the configuration wins.
A bearer token listed under a site's ``tokens`` sees only that site's studies, results and FHIR
resources; tokens from ``api.tokens`` see every site. With no ``[[sites]]`` nothing is scoped.
"""

from __future__ import annotations

from collections.abc import Iterable

from medgate.core.config import Settings, SiteConfig


def site_for_aes(settings: Settings, calling_aes: Iterable[str]) -> SiteConfig | None:
    """The site that owns a study sent by ``calling_aes``, or None (no site claims them)."""
    sent_by = {ae.strip() for ae in calling_aes if ae}  # AE titles: case-sensitive, padded
    for site in settings.sites:
        if sent_by & {ae.strip() for ae in site.calling_aes}:
            return site
    return None


def site_named(settings: Settings, name: str | None) -> SiteConfig | None:
    for site in settings.sites:
        if site.name == name:
            return site
    return None


def site_tokens(settings: Settings) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(token -> scopes, token -> site name) for every site-scoped token in ``[[sites]]``.

    A token may belong to one site only: the same token under two sites would be ambiguous."""
    scopes: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for site in settings.sites:
        for token, granted in site.tokens.items():
            if token in owner and owner[token] != site.name:
                raise ValueError(
                    f"a site token is listed under both sites {owner[token]!r} and {site.name!r}"
                )
            if token in settings.api.tokens:
                raise ValueError(f"a token of site {site.name!r} is also listed in api.tokens")
            scopes[token] = list(granted)
            owner[token] = site.name
    return scopes, owner


def visible_to(token_site: str | None, study_site: SiteConfig | None) -> bool:
    """Whether a token scoped to ``token_site`` (None: not scoped) may see a study of
    ``study_site`` (None: a study no site claims, visible to unscoped tokens only)."""
    if token_site is None:
        return True
    return study_site is not None and study_site.name == token_site
