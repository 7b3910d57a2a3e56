"""One running gateway: Ray (local or joined), Serve (HTTP API + models), DICOM service, worker.

``medgate serve`` and ``medgate demo`` both use ``Gateway``: ``start()`` brings the parts up in
dependency order (the DICOM receiver / assembler / sender, Ray, the metrics actor, the Serve
application, the worker), ``stop()`` takes them down in reverse. A local Ray is shut down with the
gateway; on a joined cluster only medgate's Serve application is deleted, the cluster stays.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from medgate.core.config import Settings
from medgate.store.db import Index
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)

RAY_NAMESPACE = "medgate"


def resolve_ray_address(settings: Settings, cli_address: str | None = None) -> str | None:
    """``--ray-address`` > ``RAY_ADDRESS`` > ``serving.ray_address``; None starts a local Ray."""
    return cli_address or os.environ.get("RAY_ADDRESS") or settings.serving.ray_address or None


class Gateway:
    """The parts of one medgate instance, started and stopped together."""

    def __init__(self, settings: Settings, ray_address: str | None = None) -> None:
        self.settings = settings
        self.ray_address = resolve_ray_address(settings, ray_address)
        self.index: Index | None = None
        self.audit = AuditLog(settings.audit_path, settings.audit.hash_key)
        self.dicom: Any | None = None
        self.site_delivery: Any | None = None
        self.referral_notifier: Any | None = None
        self.worker: Any | None = None
        self.client: Any | None = None
        self.bundles: dict[str, Any] = {}
        self.problems: list[str] = []
        self._owns_ray = False
        self._started_serve_app = False

    @property
    def api_url(self) -> str:
        host = self.settings.api.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.settings.api.port}"

    def start_ray(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            self._owns_ray = False
        elif self.ray_address:
            ray.init(address=self.ray_address, namespace=RAY_NAMESPACE, log_to_driver=False)
            log.info("joined the Ray cluster at %s", self.ray_address)
        else:
            from medgate.serving.ray_env import local_ray_environment

            # The local Ray's processes inherit the HTTP front's settings from ray.init.
            with local_ray_environment(self.settings.serving.http_ingress):
                ray.init(
                    num_cpus=self.settings.serving.ray_num_cpus,
                    include_dashboard=False,
                    object_store_memory=self.settings.serving.object_store_mb * 1024 * 1024,
                    namespace=RAY_NAMESPACE,
                    log_to_driver=False,
                )
            self._owns_ray = True
        if not self.settings.serving.deploy_app:
            return  # Serve, its proxy and the application are the cluster's (RayService)
        serve.start(
            proxy_location=self.settings.serving.proxy_location,
            http_options={"host": self.settings.api.host, "port": self.settings.api.port},
        )

    def start(self) -> Gateway:
        """Start everything; on failure, stop what was started and re-raise."""
        from medgate.cli.dicom_service import DicomService
        from medgate.pipeline.worker import Worker
        from medgate.serving.bundles import discover_all
        from medgate.serving.deployments import run_application
        from medgate.serving.metrics import ensure_metrics_actor

        started = time.monotonic()
        try:
            self.settings.storage.path.mkdir(parents=True, exist_ok=True)
            self.index = Index(self.settings.storage.resolved_database_url())
            self.bundles, self.problems, unapproved = discover_all(self.settings)
            for problem in self.problems:
                log.warning("bundle skipped: %s", problem)
            # DICOM first: the port is bound at once, and studies received while the models
            # load are stored and queued durably; the worker takes them when it starts.
            self.dicom = DicomService(self.settings, index=self.index, audit=self.audit)
            self.dicom.start()
            # beside the DICOM sender: results to the sites' HIS (HL7 v2 ORU^R01 over MLLP)
            from medgate.delivery.site_delivery import SiteDelivery

            self.site_delivery = SiteDelivery(self.settings, self.index.engine, self.audit).start()
            if self.settings.notify.channels:
                # referral changes are sent by the API at once; this loop retries what failed
                from medgate.delivery.referral_notify import ReferralNotifier

                self.referral_notifier = ReferralNotifier(
                    self.settings, self.index.engine, self.audit
                ).start()
            self.start_ray()
            metrics = ensure_metrics_actor()
            if self.settings.serving.deploy_app:
                # the API first, then the models that fit; the rest are reported, not waited for
                self.client = run_application(self.settings, self.bundles, unserved=unapproved)
                self._started_serve_app = True
                for name, reason in sorted(self.client.unserved.items()):
                    if name not in unapproved:
                        self.problems.append(f"{name}: not served: {reason}")
            else:
                self.client = attach_application(self.settings, self.bundles, self.problems)
            self.worker = Worker(
                self.settings,
                self.index,
                self.client,
                store=self.dicom.store,
                audit=self.audit,
                bundles=self.bundles,
                metrics=metrics,
            ).start()
        except BaseException:
            self.stop()
            raise
        self.audit.record(
            "application-start",
            actor="medgate-serve",
            details={
                "bundles": sorted(self.bundles),
                "ray": self.ray_address or "local",
                "seconds": round(time.monotonic() - started, 1),
            },
        )
        return self

    def stop(self) -> None:
        """Stop in reverse order; each step is attempted even if an earlier one failed."""
        for part in (self.worker, self.site_delivery, self.referral_notifier, self.dicom):
            if part is not None:
                _quietly(part.stop)
        self.worker = self.site_delivery = self.referral_notifier = self.dicom = None
        try:
            import ray

            from medgate.serving.deployments import delete_applications
            from medgate.serving.metrics import remove_metrics_actor

            if ray.is_initialized():
                if self._owns_ray:
                    # The whole local Ray goes, its replicas with it: deleting the applications
                    # first would only wait out each ingress replica's drain period.
                    _quietly(remove_metrics_actor)
                    _quietly(ray.shutdown)
                else:
                    if self._started_serve_app:
                        _quietly(delete_applications)
                    if self.ray_address:
                        _quietly(ray.shutdown)
        finally:
            self._started_serve_app = False
            if self.index is not None:
                self.audit.record("application-stop", actor="medgate-serve")
                self.index.close()
                self.index = None


def attach_application(
    settings: Settings, bundles: dict[str, Any], problems: list[str] | None = None
) -> Any:
    """Model handles to the Serve applications that the cluster already runs
    (``serving.deploy_app = false``): on Kubernetes a KubeRay RayService deploys them from its
    ``serveConfigV2``, and the receiver / worker process attaches without redeploying (a
    redeploy would fight the operator). Waits for the API application and every local image
    bundle's application to be RUNNING; a bundle whose application is still not running at the
    timeout is skipped with a problem line, like a bundle that failed to load."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    from medgate.serving.deployments import (
        APP_NAME,
        ServeModelClient,
        image_bundles,
        model_app_name,
    )

    wanted = [APP_NAME, *(model_app_name(name) for name in image_bundles(settings, bundles))]
    deadline = time.monotonic() + settings.serving.attach_timeout_s
    while True:
        applications = serve.status().applications
        running = {
            name
            for name in wanted
            if name in applications and applications[name].status == ApplicationStatus.RUNNING
        }
        # DEPLOY_FAILED / UNHEALTHY too: the operator retries, so wait for it within the timeout.
        if len(running) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    if APP_NAME not in running:
        application = applications.get(APP_NAME)
        status = application.status if application else None
        raise RuntimeError(
            f"no running Serve application {APP_NAME!r} on the cluster after "
            f"{settings.serving.attach_timeout_s:.0f} s (status: {status or 'absent'}"
            f"{': ' + application.message if application and application.message else ''}); "
            "deploy it (RayService serveConfigV2, `serve deploy`) or set "
            "serving.deploy_app = true"
        )
    names = []
    for name in image_bundles(settings, bundles):
        if model_app_name(name) in running:
            names.append(name)
        elif problems is not None:
            problems.append(
                f"{name}: its Serve application {model_app_name(name)!r} is not running on "
                "the cluster"
            )
    log.info("attached to the Serve applications of the cluster (%d models)", len(names))
    return ServeModelClient(names, settings.serving.request_timeout_s)


def _quietly(step: Any) -> None:
    try:
        step()
    except Exception as exc:
        log.warning("shutdown step failed: %s", exc)
