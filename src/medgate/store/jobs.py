"""The durable job queue: one job per study to process, claimed by one worker under a lease.

* a study idle for ``dicom.study_idle_seconds`` becomes a queued job (``enqueue_idle``);
* a worker claims a job with a guarded ``UPDATE`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
  SQLite's single writer otherwise), so two workers never both hold it;
* the claim holds a short lease that the worker's heartbeat renews (``renew``) while it lives,
  so a long study keeps its claim and a dead worker's job is taken over one lease later;
* every outcome (``complete``, ``finish``) is written only if the claim is still this worker's,
  checked in the same transaction, so a worker that lost its claim writes nothing: no
  duplicate results, ever.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from medgate.store.engine import Database, utcnow
from medgate.store.outbox import add_results
from medgate.store.rows import count_rows, fetch_all, from_row
from medgate.store.schema import jobs, studies
from medgate.store.status import JobStatus, StudyStatus
from medgate.store.studies import set_status

DEFAULT_LEASE_SECONDS = 20.0


class ClaimLost(RuntimeError):
    """The job is no longer this worker's (its lease ran out and another worker took it)."""


@dataclass(frozen=True)
class Job:
    """A claimed job: the claim is (id, worker_id, attempts); a takeover bumps ``attempts``."""

    id: int
    study_instance_uid: str
    attempts: int
    worker_id: str


@dataclass(frozen=True)
class JobRow:
    """One row of the jobs table, for status pages and tests."""

    id: int
    study_instance_uid: str
    status: JobStatus
    attempts: int
    created_at: dt.datetime
    claimed_at: dt.datetime | None
    lease_until: dt.datetime | None
    claimed_by: str | None
    finished_at: dt.datetime | None
    error: str | None


_FINISH_TO_STUDY = {
    JobStatus.FAILED: StudyStatus.FAILED,
    JobStatus.NOT_PROCESSED: StudyStatus.NOT_PROCESSED,
    JobStatus.QUEUED: StudyStatus.QUEUED,
}


def _held(job: Job) -> ColumnElement[bool]:
    return sa.and_(
        jobs.c.id == job.id,
        jobs.c.status == JobStatus.PROCESSING.value,
        jobs.c.claimed_by == job.worker_id,
        jobs.c.attempts == job.attempts,
    )


def _new_job(conn: Connection, study_uid: str, now: dt.datetime) -> int:
    key = conn.execute(
        jobs.insert().values(
            study_instance_uid=study_uid, status=JobStatus.QUEUED.value, attempts=0, created_at=now
        )
    ).inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return int(key[0])


def _job_row(row: Any) -> JobRow:
    return from_row(JobRow, row, status=JobStatus(row["status"]))


class JobQueue:
    """Queue, claim, renew and finish jobs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue_idle(self, idle_seconds: float, now: dt.datetime | None = None) -> list[str]:
        """Turn every study idle for ``idle_seconds`` into a queued job; returns their UIDs."""
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=idle_seconds)
        queued: list[str] = []
        receiving = StudyStatus.RECEIVING.value
        with self.db.write() as conn:
            rows = conn.execute(
                sa.select(studies.c.study_instance_uid)
                .where(studies.c.status == receiving, studies.c.last_instance_at <= cutoff)
                .with_for_update(skip_locked=True)
            ).all()
            for (uid,) in rows:
                moved = conn.execute(
                    studies.update()
                    .where(studies.c.study_instance_uid == uid, studies.c.status == receiving)
                    .values(status=StudyStatus.QUEUED.value, updated_at=now)
                ).rowcount
                if not moved:
                    continue  # another instance queued it first
                pending = conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.study_instance_uid == uid, jobs.c.status == JobStatus.QUEUED.value
                    )
                ).first()
                if pending is None:
                    _new_job(conn, uid, now)
                queued.append(uid)
        return queued

    def enqueue(self, study_uid: str) -> int:
        """Queue a study now (re-processing on request); returns the job id."""
        now = utcnow()
        with self.db.write() as conn:
            job_id = _new_job(conn, study_uid, now)
            set_status(conn, study_uid, StudyStatus.QUEUED, now)
            return job_id

    def claim(self, worker_id: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Job | None:
        """Claim the oldest queued job, or one whose lease ran out (its worker died)."""
        for _ in range(20):
            now = utcnow()
            # A queued job's ``lease_until`` is its back-off: not claimable before that time.
            claimable = sa.or_(
                sa.and_(
                    jobs.c.status == JobStatus.QUEUED.value,
                    sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until <= now),
                ),
                sa.and_(jobs.c.status == JobStatus.PROCESSING.value, jobs.c.lease_until < now),
            )
            with self.db.write() as conn:
                row = conn.execute(
                    sa.select(jobs.c.id, jobs.c.study_instance_uid, jobs.c.attempts)
                    .where(claimable)
                    .order_by(jobs.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    return None
                claimed = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == row.id, jobs.c.attempts == row.attempts, claimable)
                    .values(
                        status=JobStatus.PROCESSING.value,
                        attempts=row.attempts + 1,
                        claimed_at=now,
                        lease_until=now + dt.timedelta(seconds=lease_seconds),
                        claimed_by=worker_id,
                    )
                ).rowcount
                if not claimed:
                    continue  # another worker was faster; look again
                set_status(conn, row.study_instance_uid, StudyStatus.PROCESSING, now)
                return Job(row.id, row.study_instance_uid, row.attempts + 1, worker_id)
        return None

    def renew(self, job: Job, lease_seconds: float) -> bool:
        """Extend the lease of a job this worker still holds; False when it no longer does
        (finished, or taken over by another worker after the lease ran out)."""
        with self.db.write() as conn:
            return bool(
                conn.execute(
                    jobs.update()
                    .where(_held(job))
                    .values(lease_until=utcnow() + dt.timedelta(seconds=lease_seconds))
                ).rowcount
            )

    def release(self, worker_id: str | None = None) -> int:
        """Re-queue ``processing`` jobs (all, or one worker's) after a restart."""
        with self.db.write() as conn:
            query = jobs.update().where(jobs.c.status == JobStatus.PROCESSING.value)
            if worker_id is not None:
                query = query.where(jobs.c.claimed_by == worker_id)
            return conn.execute(
                query.values(status=JobStatus.QUEUED.value, lease_until=None)
            ).rowcount

    def complete(
        self,
        job: Job,
        result: dict[str, Any],
        results: Sequence[tuple[str, str, str, str]],
        *,
        priority: str | None = None,
    ) -> int:
        """Finish ``job`` as ``done`` in one transaction: the claim is checked, the result
        objects are queued in the outbox, the study gets its result JSON (with
        ``results_built_at``). Returns how many objects were new in the outbox; raises
        ``ClaimLost`` (and writes nothing) when the claim is no longer this worker's."""
        now = utcnow()
        with self.db.write() as conn:
            held = conn.execute(
                jobs.update()
                .where(_held(job))
                .values(status=JobStatus.DONE.value, finished_at=now, lease_until=None, error=None)
            ).rowcount
            if not held:
                raise ClaimLost(f"job {job.id} is no longer held by {job.worker_id}")
            added = add_results(conn, results, now)
            set_status(
                conn,
                job.study_instance_uid,
                StudyStatus.DONE,
                now,
                priority=priority,
                result={**result, "results_built_at": now.isoformat()},
            )
            return added

    def finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        error: str | None = None,
        reason: str | None = None,
        retry_after_s: float = 0.0,
    ) -> bool:
        """End an attempt without results: ``failed``, ``not-processed``, or back to ``queued``
        for a retry no worker claims before ``retry_after_s`` (back-off). The study gets the
        matching status with ``reason`` (default: ``error``). False, and nothing written, when
        the claim is no longer this worker's."""
        status = JobStatus(status)
        if status not in _FINISH_TO_STUDY:
            raise ValueError(f"a job finishes as failed, not-processed or queued, not {status!r}")
        now = utcnow()
        hold = None
        if status == JobStatus.QUEUED and retry_after_s > 0:
            hold = now + dt.timedelta(seconds=retry_after_s)
        with self.db.write() as conn:
            held = conn.execute(
                jobs.update()
                .where(_held(job))
                .values(
                    status=status.value,
                    finished_at=None if status == JobStatus.QUEUED else now,
                    lease_until=hold,
                    error=error,
                )
            ).rowcount
            if not held:
                return False
            set_status(
                conn,
                job.study_instance_uid,
                _FINISH_TO_STUDY[status],
                now,
                reason=reason if reason is not None else error,
            )
            return True

    def of_study(self, study_uid: str) -> list[JobRow]:
        query = sa.select(jobs).where(jobs.c.study_instance_uid == study_uid).order_by(jobs.c.id)
        return fetch_all(self.db.read, query, _job_row)

    def depth(self) -> int:
        """Jobs waiting to be claimed (including those held back for a retry)."""
        return count_rows(self.db.read, jobs, jobs.c.status == JobStatus.QUEUED.value)
