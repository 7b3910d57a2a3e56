"""The FastAPI application: one factory, used in-process by tests and behind Ray Serve's ingress.

Routers live in their own modules (studies, models, decision support); this module only wires them
to the settings, the index, the model client (Serve handles or in-process predictors) and the
metrics sink.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from medgate import __version__
from medgate.core.config import Settings
from medgate.store.db import Index


def create_app(
    settings: Settings,
    index: Index | None = None,
    *,
    model_client: Any | None = None,
    metrics: Any | None = None,
    bundles: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the HTTP API for ``settings``.

    ``index`` defaults to the configured database; ``model_client`` (``ServeModelClient`` or
    ``LocalModelClient``) serves ``/api/v1/models/{name}/infer`` (503 without one); ``metrics``
    defaults to this process's sink; ``bundles`` (name -> bundle) defaults to the registry's
    listing of ``models.path``, read on each ``GET /api/v1/models``.
    """
    from medgate.api import routes_cds, routes_health, routes_models, routes_studies
    from medgate.serving.metrics import metrics_sink

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
    from medgate.delivery.sites import site_tokens

    scoped_tokens, app.state.token_sites = site_tokens(settings)
    app.state.api_tokens = {**settings.api.tokens, **scoped_tokens}
    app.state.model_client = model_client
    app.state.metrics = metrics if metrics is not None else metrics_sink()
    app.state.bundles = bundles
    app.include_router(routes_health.router)
    app.include_router(routes_studies.router)
    app.include_router(routes_models.router)
    app.include_router(routes_cds.router)
    from medgate.api import routes_referrals

    app.include_router(routes_referrals.router)
    from medgate.api import routes_clinic

    app.include_router(routes_clinic.router)
    if settings.delivery.fhir.enabled:
        from medgate.api import routes_fhir

        app.include_router(routes_fhir.router)
        app.include_router(routes_fhir.guarded)
    from medgate.api import routes_review

    routes_review.include(app)  # verdicts API, notification acks and the /review pages
    return app
