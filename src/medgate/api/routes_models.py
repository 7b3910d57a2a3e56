"""The model catalogue and on-demand inference: ``/api/v1/models[/{name}/infer]``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from medgate.api.security import require_scope
from medgate.models.findings import ModelResult
from medgate.serving import bundles as bundle_info
from medgate.serving.inference import BadInput

router = APIRouter(
    prefix="/api/v1", tags=["models"], dependencies=[Depends(require_scope("results"))]
)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
DICOM_MEDIA_TYPE = "application/dicom"
MULTIPART_MEDIA_TYPE = "multipart/form-data"


class InferResponse(BaseModel):
    """What ``/infer`` answers (the OpenAPI schema; the body is written by ``run_inference``)."""

    model: str
    result: ModelResult


# ``/infer`` reads its body itself (``read_study``, by content type), so FastAPI cannot derive
# the request body's schema from a parameter: both routes declare it with these.
INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"One study: a single DICOM Part 10 instance as the whole body "
        f"(`Content-Type: {DICOM_MEDIA_TYPE}`, as Orthanc's `POST /instances`), or the study's "
        f"Part 10 files as `{MULTIPART_MEDIA_TYPE}` parts named `files`.",
        "content": {
            DICOM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            MULTIPART_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "title": "Files",
                        }
                    },
                    "required": ["files"],
                }
            },
        },
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Empty body, or not a usable DICOM study"},
    413: {"description": f"Upload larger than {MAX_UPLOAD_BYTES} bytes"},
    415: {"description": f"Content-Type neither {DICOM_MEDIA_TYPE} nor {MULTIPART_MEDIA_TYPE}"},
    502: {"description": "The model failed"},
}


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


@router.post(
    "/models/{name}/infer",
    response_model=InferResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_OPENAPI,
)
async def infer(name: str, request: Request) -> Response:
    """Run one bundle on one study: one DICOM instance as an `application/dicom` body, or the
    study's Part 10 files as multipart `files`; returns the findings as JSON.

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
        name, request, lambda payload: client.apredict(name, payload), request.app.state.metrics
    )


Predict = Callable[[list[bytes]], Awaitable[Any]]


async def read_study(request: Request) -> list[bytes]:
    """The study's Part 10 files from the request body, by its content type.

    ``application/dicom``: the body is one instance (Content-Length checked before reading);
    ``multipart/form-data``: the parts named ``files``. Anything else is 415, an empty body
    400, more than ``MAX_UPLOAD_BYTES`` 413."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == DICOM_MEDIA_TYPE:
        return [await _read_instance(request)]
    if media_type == MULTIPART_MEDIA_TYPE:
        return await _read_multipart(request)
    given = repr(content_type) if content_type else "(none)"
    raise HTTPException(
        415,
        f"unsupported Content-Type {given}: send one DICOM Part 10 "
        f"instance as the body with Content-Type {DICOM_MEDIA_TYPE}, or the study's Part 10 "
        f"files as {MULTIPART_MEDIA_TYPE} parts named 'files'",
    )


async def _read_instance(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():  # chunked bodies have no Content-Length: count
        total += len(chunk)
        if total > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
        if chunk:
            chunks.append(chunk)
    if not total:
        raise HTTPException(
            400, f"empty request body: an {DICOM_MEDIA_TYPE} body is one DICOM Part 10 instance"
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_multipart(request: Request) -> list[bytes]:
    """The ``files`` parts, with FastAPI's answers for a form it would have parsed itself
    (Starlette's default limits, 422 for a missing or non-file ``files``)."""
    try:
        form = await request.form()
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        uploads = form.getlist("files")
        if not uploads:
            raise _form_error("missing", ("body", "files"), "Field required", None)
        payload: list[bytes] = []
        total = 0
        for position, upload in enumerate(uploads):
            if not isinstance(upload, UploadFile):
                message = f"Value error, Expected UploadFile, received: {type(upload)}"
                raise _form_error("value_error", ("body", "files", position), message, upload)
            data = await upload.read()
            total += len(data)
            if total > MAX_UPLOAD_BYTES:
                raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
            payload.append(data)
        return payload
    finally:
        await form.close()


def _form_error(kind: str, loc: tuple[Any, ...], msg: str, given: Any) -> RequestValidationError:
    """The 422 FastAPI itself answers for a bad ``files`` form field (same body shape)."""
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": given}])


async def run_inference(name: str, request: Request, predict: Predict, metrics: Any) -> Response:
    """Read the study (``read_study``), call ``predict`` and map what went wrong to the HTTP
    answer: 415 for another content type, 413 for an oversized upload, 400 for an empty body
    or input that is not a usable DICOM study, 502 for a model failure. Shared by the API's
    route and each model's own application."""
    payload = await read_study(request)
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
        "/infer",
        dependencies=[Depends(require_scope("results"))],
        response_model=InferResponse,
        responses=INFER_RESPONSES,
        openapi_extra=INFER_OPENAPI,
    )
    async def infer_here(request: Request) -> Response:
        """Run this bundle on one study: one DICOM instance as an `application/dicom` body, or
        the study's Part 10 files as multipart `files` (nothing is stored)."""
        return await run_inference(name, request, predict, metrics)

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
