"""The FastAPI application: one factory, used in-process by tests and behind Ray Serve's ingress.

Routers live in their own modules (studies, models, decision support); this module only wires them
to the settings and the index.
"""

from __future__ import annotations

from fastapi import FastAPI

from medgate import __version__
from medgate.config import Settings
from medgate.db import Index


def create_app(settings: Settings, index: Index | None = None) -> FastAPI:
    """Build the HTTP API for ``settings``; ``index`` defaults to the configured database."""
    from medgate.serving import routes_cds, routes_health, routes_studies

    app = FastAPI(
        title="medgate",
        version=__version__,
        description="AI diagnosis gateway: study status and results, model inference, and "
        "decision support (JSON and HL7 CDS Hooks) for primary-care doctors.",
    )
    if index is None:
        settings.storage.path.mkdir(parents=True, exist_ok=True)
        index = Index(settings.storage.resolved_database_url())
    app.state.settings = settings
    app.state.index = index
    app.state.api_tokens = settings.api.tokens
    app.include_router(routes_health.router)
    app.include_router(routes_studies.router)
    app.include_router(routes_cds.router)
    return app
