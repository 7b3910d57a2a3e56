"""The Ray Serve application: one deployment per model bundle, and the HTTP ingress.

Built from the config and the bundle registry at start-up, never from a hard-coded model list:

* ``ModelDeployment`` (one per image bundle, named ``model-<bundle>``) loads the bundle's
  predictor (the models package chooses ONNX Runtime, its CUDA provider, or TorchScript from the
  bundle and the device) and batches ``infer`` across concurrent studies with ``@serve.batch``,
  sized per bundle. A bundle that fails to load keeps its replica alive and answers every call
  with the load error, so one broken model fails its studies, not the service.
* ``Ingress`` serves the FastAPI app (``serve.ingress``, built inside the replica) with handles
  to the model deployments for ``POST /api/v1/models/{name}/infer``.

Every batch size and backend latency goes to the metrics actor, so ``GET /metrics`` shows that
batches actually form.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from medgate.config import Settings
from medgate.models.findings import ModelResult
from medgate.serving import bundles as bundle_info
from medgate.serving.inference import (
    BadInput,
    Predictor,
    infer_grouped,
    load_predictor,
    read_datasets,
    resolve_device,
)
from medgate.serving.metrics import metrics_sink

log = logging.getLogger(__name__)

APP_NAME = "medgate"
INGRESS_NAME = "ingress"

Loader = Callable[[Any, str], Predictor]


def deployment_name(bundle: str) -> str:
    return f"model-{bundle}"


class ModelUnavailable(RuntimeError):
    """The bundle's model could not be loaded in its replica; the message says why."""


class ModelDeployment:
    """One replica serving one bundle, with dynamic batching of ``infer``."""

    def __init__(
        self,
        bundle: Any,
        device: str = "auto",
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
        loader: Loader | None = None,
    ) -> None:
        self.name = bundle_info.bundle_name(bundle)
        self.device = resolve_device(device)
        self.metrics = metrics_sink()
        self.predictor: Predictor | None = None
        self.load_error: str | None = None
        try:
            self.predictor = (loader or load_predictor)(bundle, self.device)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("bundle %s failed to load: %s", self.name, self.load_error)
        self._infer_batch.set_max_batch_size(max_batch_size)
        self._infer_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _require(self) -> Predictor:
        if self.predictor is None:
            raise ModelUnavailable(f"bundle {self.name} is unavailable: {self.load_error}")
        return self.predictor

    async def predict(self, payload: list[bytes]) -> ModelResult:
        """One study (its Part 10 files) in, the bundle's ``ModelResult`` out."""
        predictor = self._require()

        def prepare() -> tuple[list[Any], np.ndarray]:
            datasets = read_datasets(payload)
            return datasets, predictor.preprocess(datasets)

        # One thread hop for decoding + preprocessing: the event loop stays free to gather
        # other studies into the same batch.
        datasets, array = await asyncio.to_thread(prepare)
        output = await self._infer_batch(array)
        return await asyncio.to_thread(predictor.postprocess, output, datasets)

    async def infer_array(self, array: np.ndarray) -> Any:
        """A preprocessed model input in, its raw output out (the benchmark's batching probe)."""
        self._require()
        return await self._infer_batch(array)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _infer_batch(self, inputs: list[np.ndarray]) -> list[Any]:
        predictor = self._require()
        started = time.perf_counter()
        outputs, sizes = await asyncio.to_thread(infer_grouped, predictor, inputs)
        elapsed = time.perf_counter() - started
        for size in sizes:
            self.metrics.observe("medgate_model_batch_size", size, (self.name,))
        self.metrics.observe("medgate_model_inference_seconds", elapsed, (self.name,))
        return outputs

    async def status(self) -> dict[str, Any]:
        """Name, device and load state, for ``/readyz`` and the models listing."""
        return {
            "name": self.name,
            "device": self.device,
            "loaded": self.predictor is not None,
            "error": self.load_error,
        }


class ServeModelClient:
    """Calls model deployments through Serve handles; usable from sync and async code."""

    def __init__(self, handles: dict[str, DeploymentHandle], timeout_s: float = 120.0) -> None:
        self.handles = handles
        self.timeout_s = timeout_s

    @classmethod
    def connect(cls, names: Sequence[str], timeout_s: float = 120.0) -> ServeModelClient:
        """Handles to the running application's model deployments (from the driver process)."""
        handles = {
            name: serve.get_deployment_handle(deployment_name(name), app_name=APP_NAME)
            for name in names
        }
        return cls(handles, timeout_s)

    def names(self) -> list[str]:
        return sorted(self.handles)

    def _handle(self, bundle: str) -> DeploymentHandle:
        try:
            return self.handles[bundle]
        except KeyError as exc:
            raise KeyError(f"no model deployment for bundle {bundle!r}") from exc

    def predict(self, bundle: str, payload: list[bytes]) -> ModelResult:
        response = self._handle(bundle).predict.remote(payload)
        return response.result(timeout_s=self.timeout_s)  # type: ignore[no-any-return]

    async def apredict(self, bundle: str, payload: list[bytes]) -> ModelResult:
        return await self._handle(bundle).predict.remote(payload)  # type: ignore[no-any-return]

    async def astatus(self) -> dict[str, dict[str, Any]]:
        results = await asyncio.gather(
            *(handle.status.remote() for handle in self.handles.values()), return_exceptions=True
        )
        status: dict[str, dict[str, Any]] = {}
        for name, result in zip(self.handles, results, strict=True):
            if isinstance(result, BaseException):
                status[name] = {"name": name, "loaded": False, "error": str(result)}
            else:
                status[name] = result
        return status


class LocalModelClient:
    """Predictors in this process (tests of the bare app, the benchmark's direct call)."""

    def __init__(self, predictors: dict[str, Predictor]) -> None:
        self.predictors = predictors

    def names(self) -> list[str]:
        return sorted(self.predictors)

    def predict(self, bundle: str, payload: list[bytes]) -> ModelResult:
        from medgate.serving.inference import predict_local

        if bundle not in self.predictors:
            raise KeyError(f"no model loaded for bundle {bundle!r}")
        return predict_local(self.predictors[bundle], payload)

    async def apredict(self, bundle: str, payload: list[bytes]) -> ModelResult:
        return await asyncio.to_thread(self.predict, bundle, payload)

    async def astatus(self) -> dict[str, dict[str, Any]]:
        return {n: {"name": n, "loaded": True, "error": None} for n in self.predictors}


@serve.ingress()
class Ingress:
    """The HTTP API replica; the FastAPI app is built here so nothing FastAPI is pickled."""

    def __init__(self, settings: Settings, handles: dict[str, DeploymentHandle]) -> None:
        from medgate.logs import configure_logging, set_hash_key

        set_hash_key(settings.audit.hash_key)
        configure_logging("WARNING")
        self.settings = settings
        self.handles = handles

    def __serve_build_asgi_app__(self) -> Any:
        from medgate.serving.app import create_app

        client = ServeModelClient(self.handles, self.settings.serving.request_timeout_s)
        return create_app(self.settings, model_client=client, metrics=metrics_sink())


def build_application(
    settings: Settings,
    bundles: dict[str, Any] | None = None,
    loader: Loader | None = None,
) -> serve.Application:
    """The Serve application for ``settings``: ingress + one deployment per image bundle."""
    if bundles is None:
        bundles, problems = bundle_info.discover(settings)
        for problem in problems:
            log.warning("bundle skipped: %s", problem)
    model_bindings: dict[str, Any] = {}
    for name, bundle in sorted(bundles.items()):
        if not bundle_info.is_image_model(settings, bundle):
            continue
        options = bundle_info.serving_options(settings, bundle)
        deployment_options: dict[str, Any] = {
            "name": deployment_name(name),
            "ray_actor_options": {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
            "max_ongoing_requests": max(16, 4 * options.max_batch_size),
        }
        autoscaling = options.autoscaling_config()
        if autoscaling:
            deployment_options["autoscaling_config"] = autoscaling
        else:
            deployment_options["num_replicas"] = options.num_replicas
        deployment = serve.deployment(ModelDeployment).options(**deployment_options)
        model_bindings[name] = deployment.bind(
            bundle,
            settings.models.device,
            options.max_batch_size,
            options.batch_wait_timeout_s,
            loader,
        )
    ingress = serve.deployment(Ingress).options(
        name=INGRESS_NAME, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=200
    )
    return ingress.bind(settings, model_bindings)


def run_application(
    settings: Settings,
    bundles: dict[str, Any] | None = None,
    loader: Loader | None = None,
) -> ServeModelClient:
    """Deploy (or redeploy) the application on the connected Ray and return a model client."""
    if bundles is None:
        bundles, problems = bundle_info.discover(settings)
        for problem in problems:
            log.warning("bundle skipped: %s", problem)
    app = build_application(settings, bundles, loader)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    names = [n for n, b in bundles.items() if bundle_info.is_image_model(settings, b)]
    return ServeModelClient.connect(names, settings.serving.request_timeout_s)


__all__ = [
    "APP_NAME",
    "BadInput",
    "Ingress",
    "LocalModelClient",
    "ModelDeployment",
    "ModelUnavailable",
    "ServeModelClient",
    "build_application",
    "deployment_name",
    "run_application",
]
