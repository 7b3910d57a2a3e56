"""The worker: queued studies in, findings and DICOM result objects (in the outbox) out.

For each job claimed from the durable queue (``JobQueue.claim``, with a lease):

1. route the study (``serving.routing``) -> bundles and the instances each one sees; no rule
   -> ``not-processed`` with the reason;
2. call the model deployments (Serve handles; dynamic batching happens there) with the
   instances' Part 10 bytes, bundles of one study in parallel;
3. triage the results (the triage bundle), derive guidance (``reports.guidance``), build the
   result objects (``reports.build_result_objects``: SR, SEG, overlays);
4. write the objects to the store, then, in ONE transaction (``JobQueue.complete``), check the
   claim is still this worker's, put the objects in the outbox, mark the study ``done`` with its
   result JSON and finish the job.

Crash safety: the result UIDs are derived from the input UIDs and model versions (reports), so a
job re-run after ``kill -9`` writes the same files and the outbox skips UIDs it already holds:
the PACS gets one set of results. Jobs left ``processing`` by a dead worker are re-queued
at start-up (embedded SQLite: all of them; shared PostgreSQL: this worker's, others by lease).
A model error is retried up to ``routing.max_attempts`` times, each retry held back by an
exponential back-off (``routing.retry_backoff_seconds``, doubling, capped), then the study is
``failed`` with the error; the worker carries on with the next job.

Leases: a claim holds a short lease (``serving.job_lease_seconds``, 20 s), renewed by a heartbeat
every quarter of it while the job runs, so a slow study (a big CT on CPU) keeps its claim while
its worker lives, and a killed instance's studies are taken over by another one a lease later.
A renewal that finds the claim taken stops the attempt at its next stage, and every outcome is
written only if the claim still holds (checked in the same transaction): never two sets of
results.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import pydicom

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.models.findings import ModelResult, StudyResult, TriageResult
from medgate.pipeline.routing import RouteDecision, Router
from medgate.serving.metrics import MetricsSink, metrics_sink
from medgate.store.db import Index
from medgate.store.heartbeat import Heartbeat
from medgate.store.instances import InstanceRecord
from medgate.store.jobs import ClaimLost, Job
from medgate.store.status import JobStatus, StudyStatus
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)


class ModelClient(Protocol):
    def names(self) -> list[str]: ...

    def predict(self, bundle: str, payload: list[bytes]) -> ModelResult: ...


class NotProcessed(Exception):
    """The study is valid but nothing applies to it (no rule, no installed bundle)."""


def default_worker_id(settings: Settings) -> str:
    """Stable across restarts of the same instance, so its own stale jobs can be re-queued, and
    distinct for every instance on one host (each listens on its own DICOM port), so a starting
    instance never re-queues the live jobs of another one sharing the database."""
    return (
        f"{socket.gethostname()}:{settings.dicom.ae_title}:{settings.dicom.port}:"
        f"{Path(settings.storage.path).name}"
    )


class Worker:
    """Claims jobs and runs the pipeline on them, in ``serving.worker_threads`` threads."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        client: ModelClient,
        *,
        store: Any | None = None,
        audit: AuditLog | None = None,
        bundles: dict[str, Any] | None = None,
        metrics: MetricsSink | None = None,
        worker_id: str | None = None,
        on_done: Callable[[str, str], None] | None = None,
    ) -> None:
        from medgate.store.files import InstanceStore

        self.settings = settings
        self.index = index
        self.client = client
        self.store = store or InstanceStore(settings, index)
        self.audit = audit or AuditLog(settings.audit_path, settings.audit.hash_key)
        if bundles is None:
            from medgate.serving.bundles import discover

            bundles, _ = discover(settings)
        self.bundles = bundles
        self.router = Router(settings.routing.rules, available=client.names())
        self.metrics = metrics or metrics_sink()
        self.worker_id = worker_id or default_worker_id(settings)
        self.on_done = on_done
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="medgate-model-call"
        )

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> int:
        """Re-queue jobs a previous run of this instance left ``processing``."""
        released = self.index.jobs.release(None if self.index.is_sqlite else self.worker_id)
        if released:
            log.warning("re-queued %d job(s) left in processing by a previous run", released)
        return released

    def start(self) -> Worker:
        self.recover()
        self._stop.clear()
        for number in range(self.settings.serving.worker_threads):
            thread = threading.Thread(
                target=self._loop, name=f"medgate-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the jobs in hand, then stop (a job cut off here is re-run at the next start)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("worker loop error")
                worked = False
            if not worked:
                self._stop.wait(self.settings.serving.poll_seconds)

    def run_once(self) -> bool:
        """Claim and process one job; False when the queue is empty."""
        lease = self.settings.serving.job_lease_seconds
        job = self.index.jobs.claim(self.worker_id, lease)
        if job is None:
            return False
        beat = Heartbeat(
            lambda: self.index.jobs.renew(job, lease), lease / 4, f"medgate-lease-{job.id}"
        )
        with beat:
            self.process(job, beat.lost)
        return True

    # ------------------------------------------------------------------ one job
    @contextmanager
    def _stage(self, name: str, lost: threading.Event | None = None) -> Iterator[None]:
        if lost is not None and lost.is_set():
            raise ClaimLost(f"lease lost before stage {name}")
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.metrics.inc("medgate_errors_total", (name,))
            raise
        finally:
            self.metrics.observe("medgate_stage_seconds", time.perf_counter() - started, (name,))

    def process(self, job: Job, lost: threading.Event | None = None) -> str:
        """Run the pipeline on ``job``'s study; returns the study's new status, or ``lost`` when
        another worker took the job over (nothing written then). ``lost`` is the heartbeat's
        signal that the claim is gone."""
        uid = job.study_instance_uid
        started = time.perf_counter()
        try:
            result, objects, written = self._pipeline(uid, lost)
            with self._stage("commit", lost):
                added = self.index.jobs.complete(job, result, objects, priority=result["priority"])
        except ClaimLost as exc:
            return self._lost(job, str(exc))
        except NotProcessed as exc:
            reason = str(exc)
            if not self.index.jobs.finish(job, JobStatus.NOT_PROCESSED, error=reason):
                return self._lost(job, "claim taken before not-processed was written")
            log.info("study %s not processed: %s", phi_hash(uid), reason)
            return self._finished(uid, StudyStatus.NOT_PROCESSED)
        except Exception as exc:
            return self._attempt_failed(job, exc)
        for item in written:
            self.audit.record(
                "result-created",
                actor=self.worker_id,
                study_uid=uid,
                sop_instance_uid=item["sop_instance_uid"],
                details={"kind": item["kind"], "queued": added > 0},
            )
        self.metrics.observe("medgate_stage_seconds", time.perf_counter() - started, ("total",))
        return self._finished(uid, StudyStatus.DONE)

    def _attempt_failed(self, job: Job, exc: Exception) -> str:
        """A model or pipeline error: retry with back-off, or ``failed`` after the last try."""
        uid = job.study_instance_uid
        error = f"{type(exc).__name__}: {_one_line(exc)}"
        if job.attempts >= self.settings.routing.max_attempts:
            if not self.index.jobs.finish(job, JobStatus.FAILED, error=error):
                return self._lost(job, "claim taken before the failure was written")
            log.error("study %s failed after %d attempt(s): %s", phi_hash(uid), job.attempts, error)
            self.audit.record(
                "model-run",
                outcome="failure",
                actor=self.worker_id,
                study_uid=uid,
                details={"error": error[:500]},
            )
            return self._finished(uid, StudyStatus.FAILED)
        delay = retry_delay(self.settings, job.attempts)
        retry = self.index.jobs.finish(
            job,
            JobStatus.QUEUED,
            error=error,
            reason=f"attempt {job.attempts} failed, will retry in {delay:.0f} s: {error}",
            retry_after_s=delay,
        )
        if not retry:
            return self._lost(job, "claim taken before the retry was written")
        log.warning(
            "study %s attempt %d failed, retry in %.1f s: %s",
            phi_hash(uid),
            job.attempts,
            delay,
            error,
        )
        return StudyStatus.QUEUED

    def _lost(self, job: Job, why: str) -> str:
        """Another worker holds the job now: this attempt ends without writing anything."""
        log.warning(
            "study %s: job %d no longer held by this worker (%s); its results are not written",
            phi_hash(job.study_instance_uid),
            job.id,
            why,
        )
        self.metrics.inc("medgate_jobs_total", ("lost",))
        return "lost"

    def _finished(self, uid: str, status: str) -> str:
        self.metrics.inc("medgate_jobs_total", (status,))
        if self.on_done is not None:
            self.on_done(uid, status)
        return status

    def _pipeline(
        self, uid: str, lost: threading.Event | None = None
    ) -> tuple[dict[str, Any], list[tuple[str, str, str, str]], list[dict[str, str]]]:
        """Route, infer, triage, build and write the result files; returns the result JSON,
        the outbox entries and the written objects (queued by ``JobQueue.complete``)."""
        with self._stage("route", lost):
            rows = self.index.instances.of_study(uid)
            decision = self.router.route([asdict(row) for row in rows])
        if not decision.matched:
            raise NotProcessed(decision.reason or "no routing rule matched")
        by_uid = {row.sop_instance_uid: row for row in rows}

        with self._stage("model", lost):
            model_results = self._run_models(uid, decision, by_uid)

        with self._stage("load", lost):
            used = {u for uids in decision.bundles.values() for u in uids}
            sources: list[pydicom.Dataset] = [
                pydicom.dcmread(by_uid[u].path) for u in by_uid if u in used
            ]

        with self._stage("triage", lost):
            triage = self._triage(model_results)
        study = StudyResult(study_instance_uid=uid, model_results=model_results, triage=triage)
        with self._stage("guidance", lost):
            from medgate.clinical.context import study_context
            from medgate.clinical.guidance import guidance_for

            study.guidance = list(guidance_for(study, context=study_context(sources)))
        with self._stage("reports", lost):
            from medgate.reports import build_result_objects

            objects = list(build_result_objects(study, sources, self.settings.reports))
        with self._stage("write", lost):
            outbox: list[tuple[str, str, str, str]] = []
            written: list[dict[str, str]] = []
            for obj in objects:
                path = self.store.write_result(obj.dataset)
                sop_uid = str(obj.dataset.SOPInstanceUID)
                outbox.append((sop_uid, uid, obj.kind, str(path)))
                written.append(
                    {
                        "sop_instance_uid": sop_uid,
                        "sop_class_uid": str(obj.dataset.SOPClassUID),
                        "kind": obj.kind,
                    }
                )
        return study_result_json(study, decision, written), outbox, written

    def _run_models(
        self, uid: str, decision: RouteDecision, by_uid: dict[str, InstanceRecord]
    ) -> list[ModelResult]:
        futures: dict[str, concurrent.futures.Future[ModelResult]] = {}
        for bundle, sop_uids in decision.bundles.items():
            payload = [Path(by_uid[u].path).read_bytes() for u in sop_uids]
            futures[bundle] = self._pool.submit(self.client.predict, bundle, payload)
        results: list[ModelResult] = []
        errors: list[str] = []
        for bundle, future in futures.items():
            started = time.perf_counter()
            try:
                result = future.result()
            except Exception as exc:
                errors.append(f"{bundle}: {_one_line(exc)}")
                continue
            results.append(result)
            self.audit.record(
                "model-run",
                actor=self.worker_id,
                study_uid=uid,
                details={
                    "bundle": result.bundle_name,
                    "version": result.bundle_version,
                    "device_uid": result.device_uid,
                    "instances": len(decision.bundles[bundle]),
                    "present": sorted(f.label for f in result.findings if f.present),
                    "wait_s": round(time.perf_counter() - started, 3),
                },
            )
        if errors:
            raise ModelError("; ".join(errors))
        return results

    def _triage(self, model_results: list[ModelResult]) -> TriageResult:
        """The triage bundle's priority; the clinical rule when it is not installed."""
        from medgate.clinical.triage_rules import rule_triage
        from medgate.models.triage import triage

        bundle = self.bundles.get(self.settings.routing.triage_bundle)
        return triage(model_results, bundle) if bundle is not None else rule_triage(model_results)


class ModelError(RuntimeError):
    """One or more model deployments failed for a study."""


def study_result_json(
    study: StudyResult, decision: RouteDecision, objects: list[dict[str, str]]
) -> dict[str, Any]:
    """The JSON stored with a ``done`` study and served by ``GET /api/v1/studies/{uid}``.

    ``scores`` carries the probabilities of a bundle that has no thresholds (a plain MONAI
    bundle): they are shown as they are, with no present/absent call, so they never appear in
    ``findings``.
    """
    findings: list[dict[str, Any]] = []
    for result in study.model_results:
        for finding in result.findings:
            findings.append(
                {
                    "bundle": result.bundle_name,
                    "version": result.bundle_version,
                    **finding.model_dump(mode="json"),
                }
            )
    triage = study.triage
    return {
        "routing": {"rules": decision.rules, "bundles": sorted(decision.bundles)},
        "findings": findings,
        "measurements": [
            {"bundle": r.bundle_name, **m.model_dump(mode="json")}
            for r in study.model_results
            for m in r.measurements
        ],
        "scores": [
            {
                "bundle": r.bundle_name,
                "version": r.bundle_version,
                "label": label,
                "probability": probability,
            }
            for r in study.model_results
            for label, probability in r.scores.items()
        ],
        "models": [
            {
                "name": r.bundle_name,
                "version": r.bundle_version,
                "task": r.task,
                "device_uid": r.device_uid,
            }
            for r in study.model_results
        ],
        "priority": triage.priority if triage else None,
        "reasons": list(triage.reasons) if triage else [],
        "triage": triage.model_dump(mode="json") if triage else None,
        "guidance": [g.model_dump(mode="json") for g in study.guidance],
        "result_objects": objects,
    }


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: the base back-off doubled per failed attempt."""
    routing = settings.routing
    return float(
        min(routing.retry_backoff_max_seconds, routing.retry_backoff_seconds * 2 ** (attempts - 1))
    )


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text[:500]
