"""The model catalogue and on-demand inference: ``/api/v1/models[/{name}/infer]``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Request, Response, UploadFile
from pydantic import BaseModel

from medgate.models.findings import ModelResult
from medgate.security import require_scope
from medgate.serving import bundles as bundle_info
from medgate.serving.inference import BadInput

router = APIRouter(
    prefix="/api/v1", tags=["models"], dependencies=[Depends(require_scope("results"))]
)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class InferResponse(BaseModel):
    """What ``/infer`` answers (the OpenAPI schema; the body is written by ``run_inference``)."""

    model: str
    result: ModelResult


def _bundles(request: Request) -> dict[str, Any]:
    state = request.app.state
    if state.bundles is None:
        # Loaded once: validating a bundle hashes its model files, and the served deployments
        # only change with a restart anyway.
        state.bundles, _ = bundle_info.discover(state.settings)
    return dict(state.bundles)


@router.get("/models")
async def list_models(request: Request) -> list[dict[str, Any]]:
    """Every installed bundle: name, version, task, inputs, labels (with codes) and metrics."""
    bundles = await asyncio.to_thread(_bundles, request)
    return [bundle_info.describe(bundles[name]) for name in sorted(bundles)]


@router.post("/models/{name}/infer", response_model=InferResponse)
async def infer(name: str, request: Request, files: list[UploadFile] = File(...)) -> Response:
    """Run one bundle on one study given as DICOM Part 10 files; returns the findings as JSON.

    Nothing is stored and nothing is sent to the PACS: this is for trying a model on a study.
    Behind Ray Serve each served bundle answers this path itself (its own application, see
    ``model_app``); this route answers for names that no bundle serves, and in-process use.
    """
    client = request.app.state.model_client
    if client is None:
        raise HTTPException(503, "model serving is not running in this process")
    if name not in client.names():
        known = ", ".join(client.names()) or "none"
        raise HTTPException(404, f"no image model named {name!r} is served (served: {known})")
    return await run_inference(
        name, files, lambda payload: client.apredict(name, payload), request.app.state.metrics
    )


Predict = Callable[[list[bytes]], Awaitable[Any]]


async def run_inference(
    name: str, files: list[UploadFile], predict: Predict, metrics: Any
) -> Response:
    """Read the uploads, call ``predict`` and map what went wrong to the HTTP answer: 413 for
    an oversized upload, 400 for input that is not a usable DICOM study, 502 for a model
    failure. Shared by the API's route and each model's own application."""
    payload: list[bytes] = []
    total = 0
    for upload in files:
        data = await upload.read()
        total += len(data)
        if total > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
        payload.append(data)
    started = time.perf_counter()
    try:
        result = await predict(payload)
    except BadInput as exc:
        raise HTTPException(400, str(exc)) from exc
    except Exception as exc:
        cause = _bad_input_cause(exc)
        if cause is not None:
            raise HTTPException(400, cause) from exc
        raise HTTPException(502, f"model {name} failed: {_short(exc)}") from exc
    metrics.observe("medgate_stage_seconds", time.perf_counter() - started, ("api-infer",))
    # Pydantic writes the JSON itself; FastAPI's generic encoder would walk a dict again.
    body = InferResponse(model=name, result=result).model_dump_json()
    return Response(body, media_type="application/json")


def model_app(settings: Any, name: str, predict: Predict, metrics: Any) -> FastAPI:
    """The HTTP face of one model replica, served at ``/api/v1/models/<name>`` (its Serve
    application's route prefix): ``POST /infer`` with the API's authentication and answers,
    run by the replica that holds the model, so an HTTP inference costs no extra hop."""
    app = FastAPI(title=f"medgate model {name}", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.api_tokens = settings.api.tokens

    @app.post(
        "/infer", dependencies=[Depends(require_scope("results"))], response_model=InferResponse
    )
    async def infer_here(files: list[UploadFile] = File(...)) -> Response:
        """Run this bundle on one study given as DICOM Part 10 files (nothing is stored)."""
        return await run_inference(name, files, predict, metrics)

    return app


def _bad_input_cause(exc: BaseException) -> str | None:
    """Ray wraps replica exceptions; find a ``BadInput`` inside, if that is what happened."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BadInput):
            return str(seen)
        cause = getattr(seen, "cause", None)
        if isinstance(cause, BadInput):
            return str(cause)
        seen = seen.__cause__
    if "BadInput" in str(exc):
        text = str(exc)
        return text[text.rfind("BadInput") :].split("\n", 1)[0].removeprefix("BadInput: ")
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:500] if text else type(exc).__name__
