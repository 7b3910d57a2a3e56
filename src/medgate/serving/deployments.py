"""The Ray Serve applications: one per model bundle, and the HTTP API.

Built from the config and the bundle registry at start-up, never from a hard-coded model list:

* ``ModelDeployment`` (one per image bundle, named ``model-<bundle>``, in its own application
  ``medgate-model-<bundle>`` at route prefix ``/api/v1/models/<bundle>``) loads the bundle's
  predictor (the models package chooses ONNX Runtime, its CUDA provider, or TorchScript from the
  bundle and the device) and batches ``infer`` across concurrent studies with ``@serve.batch``,
  sized per bundle. It is the ingress of its application, so ``POST
  /api/v1/models/<bundle>/infer`` is answered by the replica that holds the model: Serve's HTTP
  front (HAProxy by default, see ``ray_env``) routes by the longest route prefix, and no second
  replica hop is paid. The worker calls the same deployment through handles. A bundle that fails
  to load keeps its replica alive and answers every call with the load error, so one broken model
  fails its studies, not the service.
* ``Ingress`` (application ``medgate`` at ``/``) serves the rest of the FastAPI app, with handles
  to the model deployments for ``/readyz``, and answers 404 for a model name nobody serves.

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

from medgate.core.config import Settings
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
from medgate.serving.placement import INGRESS_CPUS, Placement, plan_placement, ray_resources

log = logging.getLogger(__name__)

APP_NAME = "medgate"
INGRESS_NAME = "ingress"
MODEL_APP_PREFIX = "medgate-model-"

Loader = Callable[[Any, str], Predictor]
# how long the start-up waits for an application to run before reporting it and going on
READY_TIMEOUT_S = 300.0


def deployment_name(bundle: str) -> str:
    return f"model-{bundle}"


def model_app_name(bundle: str) -> str:
    """The Serve application that serves ``bundle`` (one per bundle)."""
    return f"{MODEL_APP_PREFIX}{bundle}"


def model_route_prefix(bundle: str) -> str:
    """Where the bundle's application answers HTTP: its ``/infer`` is the API's
    ``/api/v1/models/<bundle>/infer``."""
    return f"/api/v1/models/{bundle}"


class ModelUnavailable(RuntimeError):
    """The bundle's model could not be loaded in its replica; the message says why."""


@serve.ingress()
class ModelDeployment:
    """One replica serving one bundle, with dynamic batching of ``infer``; also the HTTP
    ingress of the bundle's own application (``POST /infer`` under its route prefix)."""

    def __init__(
        self,
        bundle: Any,
        device: str = "auto",
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
        loader: Loader | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.name = bundle_info.bundle_name(bundle)
        self.settings = settings
        self.device = resolve_device(device)
        self.metrics = metrics_sink()
        self.predictor: Predictor | None = None
        self.load_error: str | None = None
        try:
            self.predictor = (loader or load_predictor)(bundle, self.device)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("bundle %s failed to load: %s", self.name, self.load_error)
        # A batch of one gathers nothing: such a bundle skips @serve.batch's queue and runs a
        # study in one thread hop (bench/serving.py's overhead part measures this path).
        self.batching = max_batch_size > 1
        batcher: Any = self._infer_batch  # @serve.batch's wrapper, typed as the plain method
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> Any:
        """Built in the replica (nothing FastAPI is pickled); same tokens as the API."""
        from medgate.api.routes_models import model_app

        return model_app(self.settings or Settings(), self.name, self.predict, self.metrics)

    def _require(self) -> Predictor:
        if self.predictor is None:
            raise ModelUnavailable(f"bundle {self.name} is unavailable: {self.load_error}")
        return self.predictor

    async def predict(self, payload: list[bytes]) -> ModelResult:
        """One study (its Part 10 files) in, the bundle's ``ModelResult`` out."""
        predictor = self._require()
        if not self.batching:
            return await asyncio.to_thread(self._predict_one, predictor, payload)

        def prepare() -> tuple[list[Any], np.ndarray]:
            datasets = read_datasets(payload)
            return datasets, predictor.preprocess(datasets)

        # One thread hop for decoding + preprocessing: the event loop stays free to gather
        # other studies into the same batch.
        datasets, array = await asyncio.to_thread(prepare)
        output = await self._infer_batch(array)
        return await asyncio.to_thread(predictor.postprocess, output, datasets)

    def _predict_one(self, predictor: Predictor, payload: list[bytes]) -> ModelResult:
        """A whole study in this thread, unbatched."""
        datasets = read_datasets(payload)
        outputs = self._run_backend(predictor, [predictor.preprocess(datasets)])
        return predictor.postprocess(outputs[0], datasets)

    async def infer_array(self, array: np.ndarray) -> Any:
        """A preprocessed model input in, its raw output out (the benchmark's batching probe)."""
        predictor = self._require()
        if not self.batching:
            return (await asyncio.to_thread(self._run_backend, predictor, [array]))[0]
        return await self._infer_batch(array)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _infer_batch(self, inputs: list[np.ndarray]) -> list[Any]:
        return await asyncio.to_thread(self._run_backend, self._require(), inputs)

    def _run_backend(self, predictor: Predictor, inputs: list[np.ndarray]) -> list[Any]:
        """The backend call (blocking), with its batch sizes and latency sent to the metrics."""
        started = time.perf_counter()
        outputs, sizes = infer_grouped(predictor, inputs)
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
    """Calls model deployments through Serve handles; usable from sync and async code.

    Handles are made on first use: the API's ingress may start before (or, on a cluster whose
    operator deploys each application, without) a model's application, and a bundle whose
    application is missing fails its own calls only."""

    def __init__(
        self,
        names: Sequence[str],
        timeout_s: float = 120.0,
        unserved: dict[str, str] | None = None,
    ) -> None:
        self._names = sorted(names)
        self.timeout_s = timeout_s
        self._handles: dict[str, DeploymentHandle] = {}
        # bundles that exist but are not served (not placed, not approved): name -> why
        self.unserved = dict(unserved or {})

    def names(self) -> list[str]:
        return list(self._names)

    def update(self, names: Sequence[str], unserved: dict[str, str]) -> None:
        """Serve ``names`` from now on; ``unserved`` are reported as not served."""
        self._names = sorted(names)
        self.unserved = dict(unserved)
        self._handles = {n: h for n, h in self._handles.items() if n in self._names}

    def _handle(self, bundle: str) -> DeploymentHandle:
        if bundle not in self._names:
            raise KeyError(f"no model deployment for bundle {bundle!r}")
        handle = self._handles.get(bundle)
        if handle is None:
            handle = serve.get_deployment_handle(
                deployment_name(bundle), app_name=model_app_name(bundle)
            )
            self._handles[bundle] = handle
        return handle

    async def _ahandle(self, bundle: str) -> DeploymentHandle:
        handle = self._handles.get(bundle)
        if handle is not None:
            return handle
        # The first lookup asks Serve's controller (blocking): keep the event loop free.
        return await asyncio.to_thread(self._handle, bundle)

    def predict(self, bundle: str, payload: list[bytes]) -> ModelResult:
        response = self._handle(bundle).predict.remote(payload)
        return response.result(timeout_s=self.timeout_s)

    async def apredict(self, bundle: str, payload: list[bytes]) -> ModelResult:
        handle = await self._ahandle(bundle)
        return await handle.predict.remote(payload)

    async def astatus(self) -> dict[str, dict[str, Any]]:
        async def one(name: str) -> dict[str, Any]:
            handle = await self._ahandle(name)
            return await handle.status.remote()

        results = await asyncio.gather(*(one(n) for n in self._names), return_exceptions=True)
        status: dict[str, dict[str, Any]] = {}
        for name, result in zip(self._names, results, strict=True):
            if isinstance(result, BaseException):
                status[name] = {"name": name, "loaded": False, "error": str(result)}
            else:
                status[name] = result
        for name, reason in sorted(self.unserved.items()):
            status[name] = {"name": name, "loaded": False, "error": f"not served: {reason}"}
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
    """The HTTP API replica; the FastAPI app is built here so nothing FastAPI is pickled.

    Which models are served (and which not, and why) comes as the deployment's
    ``user_config``: a model left out after the API started updates the running replica
    in place (``reconfigure``), with no second replica to schedule."""

    def __init__(self, settings: Settings) -> None:
        from medgate.core.logs import configure_logging, set_hash_key

        set_hash_key(settings.audit.hash_key)
        configure_logging("WARNING")
        self.settings = settings
        self.client = ServeModelClient([], settings.serving.request_timeout_s)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.client.update(config.get("served", []), config.get("unserved", {}))

    async def served(self) -> dict[str, Any]:
        """The models this replica serves and those it reports as not served."""
        return {"served": self.client.names(), "unserved": dict(self.client.unserved)}

    def __serve_build_asgi_app__(self) -> Any:
        from medgate.api.app import create_app

        return create_app(self.settings, model_client=self.client, metrics=metrics_sink())


def image_bundles(settings: Settings, bundles: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundles that get a model application: the image models among ``bundles`` (default:
    the registry's listing of ``models.path``; skipped bundles are logged)."""
    if bundles is None:
        bundles, problems = bundle_info.discover(settings)
        for problem in problems:
            log.warning("bundle skipped: %s", problem)
    return {
        name: bundle
        for name, bundle in sorted(bundles.items())
        if bundle_info.is_image_model(settings, bundle)
    }


def build_model_application(
    settings: Settings,
    bundle: Any,
    loader: Loader | None = None,
    options: bundle_info.ServingOptions | None = None,
) -> serve.Application:
    """One bundle's application: its ``ModelDeployment`` with the bundle's serving options
    (``options``: as the placement sized them; default: the config's)."""
    name = bundle_info.bundle_name(bundle)
    options = options or bundle_info.serving_options(settings, bundle)
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
    declare: Any = serve.deployment  # typed stubs know only its decorator form
    deployment = declare(ModelDeployment).options(**deployment_options)
    return deployment.bind(
        bundle,
        settings.models.device,
        options.max_batch_size,
        options.batch_wait_timeout_s,
        loader,
        settings,
    )


def build_api_application(
    settings: Settings, model_names: Sequence[str], unserved: dict[str, str] | None = None
) -> serve.Application:
    """The HTTP API's application (ingress at ``/``), knowing which models are served and
    which are not (``unserved``: name -> reason, shown by ``/readyz``)."""
    declare: Any = serve.deployment  # typed stubs know only its decorator form
    ingress = declare(Ingress).options(
        name=INGRESS_NAME,
        ray_actor_options={"num_cpus": INGRESS_CPUS},
        max_ongoing_requests=200,
        user_config={"served": sorted(model_names), "unserved": dict(unserved or {})},
    )
    return ingress.bind(settings)


def build_applications(
    settings: Settings,
    bundles: dict[str, Any] | None = None,
    loader: Loader | None = None,
    placement: Placement | None = None,
    unserved: dict[str, str] | None = None,
) -> list[serve.RunTarget]:
    """Every application for ``settings``: the HTTP API first, then one per image bundle that
    ``placement`` fits (default: every image bundle with the config's options)."""
    models = image_bundles(settings, bundles)
    if placement is None:
        placement = Placement(
            {n: bundle_info.serving_options(settings, b) for n, b in models.items()}
        )
    placed = {name: models[name] for name in placement.options if name in models}
    not_served = {**(unserved or {}), **placement.unplaced}
    targets = [
        serve.RunTarget(build_api_application(settings, list(placed), not_served), name=APP_NAME)
    ]
    targets += [
        serve.RunTarget(
            build_model_application(settings, bundle, loader, placement.options[name]),
            name=model_app_name(name),
            route_prefix=model_route_prefix(name),
        )
        for name, bundle in placed.items()
    ]
    return targets


def run_application(
    settings: Settings,
    bundles: dict[str, Any] | None = None,
    loader: Loader | None = None,
    unserved: dict[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> ServeModelClient:
    """Deploy (or redeploy) the applications on the connected Ray and return a model client.

    The replicas are sized to what Ray reports (``serving.placement``) before anything is
    deployed; the HTTP API goes first and must be running before the models are deployed, so
    a model never takes the API's place. A bundle that does not fit, or whose replicas Ray
    still cannot schedule, is left out and reported (``client.unserved``, ``/readyz``, the
    log) instead of holding the start-up. ``unserved`` adds bundles the caller left out
    (not approved). Model applications no longer configured (a bundle removed since the
    last deploy) are deleted, so no stale model keeps answering under its old route."""
    models = image_bundles(settings, bundles)
    cpus, gpus = ray_resources()
    placement = plan_placement(settings, models, cpus, gpus)
    for name, reason in placement.unplaced.items():
        log.warning("bundle %s is not served: %s", name, reason)
    targets = build_applications(settings, models, loader, placement, unserved)
    wanted = {target.name for target in targets}
    for stale in sorted(medgate_applications() - wanted):
        serve.delete(stale, _blocking=False)
    api, model_targets = targets[0], targets[1:]
    serve.run_many([api], wait_for_applications_running=False)
    failed = wait_for_applications([APP_NAME], ready_timeout_s)
    if APP_NAME in failed:
        raise RuntimeError(f"the HTTP API application did not start: {failed[APP_NAME]}")
    not_served = {**(unserved or {}), **placement.unplaced}
    if model_targets:
        serve.run_many(model_targets, wait_for_applications_running=False)
        names = [t.name for t in model_targets]
        for app, reason in wait_for_applications(names, ready_timeout_s).items():
            name = app.removeprefix(MODEL_APP_PREFIX)
            log.warning("bundle %s is not served: %s", name, reason)
            serve.delete(app, _blocking=False)
            not_served[name] = reason
    served = [n for n in placement.options if n not in not_served]
    if len(not_served) > len(unserved or {}) + len(placement.unplaced):
        # the API must not offer models that were taken away again: updated in place
        api = serve.RunTarget(build_api_application(settings, served, not_served), name=APP_NAME)
        serve.run_many([api], wait_for_applications_running=False)
        wait_for_ingress_config(served, not_served, ready_timeout_s)
    return ServeModelClient(served, settings.serving.request_timeout_s, not_served)


def wait_for_ingress_config(
    served: Sequence[str], unserved: dict[str, str], timeout_s: float
) -> None:
    """Wait until the API replica reports ``served`` / ``unserved`` (its ``reconfigure`` ran)."""
    handle = serve.get_deployment_handle(INGRESS_NAME, app_name=APP_NAME)
    wanted = {"served": sorted(served), "unserved": dict(unserved)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if handle.served.remote().result(timeout_s=timeout_s) == wanted:
            return
        time.sleep(0.2)
    log.warning("the API did not take the new model list within %.0f s", timeout_s)


def wait_for_applications(names: Sequence[str], timeout_s: float) -> dict[str, str]:
    """Wait until each application runs; returns those that will not: name -> why.

    Not running means: its deployment failed, Ray reports replicas it cannot schedule (Serve
    says so after 30 s), or it is still not running at ``timeout_s`` (a model that loads
    that slowly is reported rather than waited for without end)."""
    from ray.serve.schema import ApplicationStatus

    pending = set(names)
    failed: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        applications = serve.status().applications
        for name in sorted(pending):
            app = applications.get(name)
            if app is None:
                continue
            if app.status == ApplicationStatus.RUNNING:
                pending.discard(name)
                continue
            messages = [app.message or ""] + [d.message or "" for d in app.deployments.values()]
            unschedulable = next((m for m in messages if "to be scheduled" in m), None)
            if app.status == ApplicationStatus.DEPLOY_FAILED:
                failed[name] = f"deployment failed: {_first_line(messages)}"
            elif unschedulable:
                failed[name] = f"Ray cannot place its replica: {_first_line([unschedulable])}"
            if name in failed:
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            for name in pending:
                failed[name] = f"not running after {timeout_s:.0f} s"
            break
        if pending:
            time.sleep(0.5)
    return failed


def _first_line(messages: Sequence[str]) -> str:
    text = next((m for m in messages if m.strip()), "no message")
    return text.strip().splitlines()[0][:300]


def medgate_applications() -> set[str]:
    """Names of medgate's Serve applications running on the connected cluster."""
    return {
        name
        for name in serve.status().applications
        if name == APP_NAME or name.startswith(MODEL_APP_PREFIX)
    }


def delete_applications() -> None:
    """Delete the API application first (no new requests), then every model application.

    Without waiting: behind HAProxy each ingress replica drains for
    ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`` before it stops, and the controller
    finishes the deletion without us."""
    names = medgate_applications()
    for name in sorted(names, key=lambda n: n != APP_NAME):
        serve.delete(name, _blocking=False)


__all__ = [
    "APP_NAME",
    "MODEL_APP_PREFIX",
    "BadInput",
    "Ingress",
    "LocalModelClient",
    "ModelDeployment",
    "ModelUnavailable",
    "ServeModelClient",
    "build_api_application",
    "build_applications",
    "build_model_application",
    "delete_applications",
    "deployment_name",
    "image_bundles",
    "medgate_applications",
    "model_app_name",
    "model_route_prefix",
    "run_application",
    "wait_for_applications",
]
