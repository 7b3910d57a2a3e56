"""The index, the job queue and the outbox: one SQLAlchemy Core schema for SQLite and PostgreSQL.

Every state change that the durability rules rely on is one transaction here:

* an instance's index row is committed before the receiver answers C-STORE success;
* a study becomes a job when it has been idle for ``dicom.study_idle_seconds``;
* a job is claimed by exactly one worker (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a guarded
  ``UPDATE`` under SQLite's single writer) and holds a lease, so a job of a killed worker is taken
  up again;
* a result object stays in the outbox until the PACS confirmed it, or is dead-lettered.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit survives ``kill -9``.
The tables below describe the schema for queries; ``medgate.store.migrations`` (Alembic) creates and
upgrades it, and a test keeps the two identical.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from medgate.store.schema import (
    OUTBOX_STATUSES,
    STUDY_STATUSES,
    instances,
    jobs,
    metadata,
    outbox,
    studies,
)

__all__ = [
    "OUTBOX_STATUSES",
    "STUDY_STATUSES",
    "instances",
    "jobs",
    "metadata",
    "outbox",
    "studies",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything medgate stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance, as the receiver indexes it."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    sha256: str
    path: str
    modality: str | None = None
    body_part: str | None = None
    series_description: str | None = None
    instance_number: int | None = None
    calling_ae: str | None = None
    received_at: dt.datetime | None = None


@dataclass(frozen=True)
class Job:
    id: int
    study_instance_uid: str
    attempts: int


@dataclass(frozen=True)
class OutboxItem:
    id: int
    sop_instance_uid: str
    study_instance_uid: str
    kind: str
    path: str
    attempts: int
    refusals: int = 0


class Index:
    """Thread-safe access to the index, job queue and outbox of one database."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite has one writer; serialising writers in-process avoids busy retries.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else nullcontext()
        )
        if create:
            from medgate.store.migrations import upgrade

            upgrade(self.engine)

    def close(self) -> None:
        hot = getattr(self, "_hot", None)
        if hot:
            hot[0].close()
            self._hot = ()
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ instances
    def record_instance(self, rec: InstanceRecord) -> bool:
        """Index a stored instance and (re)open its study; False if the UID was already indexed."""
        now = rec.received_at or utcnow()
        with self._write() as conn:
            exists = conn.execute(
                sa.select(instances.c.sha256).where(
                    instances.c.sop_instance_uid == rec.sop_instance_uid
                )
            ).first()
            if exists is not None:
                return False
            row = dict(rec.__dict__, received_at=now)
            try:
                with conn.begin_nested():
                    conn.execute(instances.insert().values(**row))
            except sa.exc.IntegrityError:
                return False  # another process indexed the same UID a moment ago
            self._touch_study(conn, rec.study_instance_uid, now)
            return True

    def index_instance(self, rec: InstanceRecord) -> bool:
        """``record_instance`` in two statements, for the receiver's hot path.

        An insert that ignores an existing UID plus an upsert of the study ("receiving", last
        instance now), in one transaction. Same result as ``record_instance`` (False when the UID
        was already indexed, nothing touched then), at about half the Python work per instance,
        which is what bounds C-STORE throughput on one association.
        """
        statements = self._fast_statements()
        if statements is None:
            return self.record_instance(rec)
        insert_instance, upsert_study = statements
        now = rec.received_at or utcnow()
        hot = self._sqlite_hot_path()
        if hot is not None:
            path, insert_compiled, upsert_compiled = hot
            with self._write_lock:
                return path.run(
                    [
                        (insert_compiled, dict(rec.__dict__, received_at=now)),
                        (upsert_compiled, {"uid": rec.study_instance_uid, "now": now}),
                    ],
                    stop_on_empty=0,
                )
        with self._write() as conn:
            # RETURNING, not rowcount: psycopg reports rowcount -1 for an INSERT ... ON CONFLICT
            # DO NOTHING, which made a duplicate look newly inserted on PostgreSQL
            inserted = conn.execute(insert_instance, dict(rec.__dict__, received_at=now)).first()
            if inserted is None:
                return False
            conn.execute(upsert_study, {"uid": rec.study_instance_uid, "now": now})
            return True

    def _sqlite_hot_path(self) -> tuple[Any, Any, Any] | None:
        """``index_instance``'s statements on a raw ``sqlite3`` connection (file databases
        only), made on first use; see ``medgate.store.sqlite_hot_path``."""
        hot = getattr(self, "_hot", None)
        if hot is not None:
            return hot or None
        database = self.engine.url.database
        statements = self._fast_statements()
        if (
            not self.is_sqlite
            or statements is None
            or not database
            or database == ":memory:"
            or database.startswith("file:")
        ):
            self._hot: tuple[Any, Any, Any] | tuple[()] = ()
            return None
        from medgate.store.sqlite_hot_path import CompiledStatement, SqliteHotPath

        with self._write_lock:
            if getattr(self, "_hot", None) is None:
                dialect = self.engine.dialect
                columns = [*InstanceRecord.__dataclass_fields__]
                self._hot = (
                    SqliteHotPath(database, _sqlite_pragmas),
                    CompiledStatement(statements[0], dialect, columns),
                    CompiledStatement(statements[1], dialect),
                )
        return self._hot or None

    def _fast_statements(self) -> tuple[Any, Any] | None:
        cached = getattr(self, "_fast_cache", None)
        if cached is not None:
            return cached or None
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        else:
            self._fast_cache: tuple[Any, Any] | tuple[()] = ()
            return None
        insert_instance = (
            insert(instances)
            .on_conflict_do_nothing(index_elements=[instances.c.sop_instance_uid])
            .returning(instances.c.sop_instance_uid)
        )
        now = sa.bindparam("now")
        new_study = insert(studies).values(
            study_instance_uid=sa.bindparam("uid"),
            status="receiving",
            received_at=now,
            last_instance_at=now,
            updated_at=now,
        )
        upsert_study = new_study.on_conflict_do_update(
            index_elements=[studies.c.study_instance_uid],
            set_={
                "status": "receiving",
                "last_instance_at": new_study.excluded.last_instance_at,
                "updated_at": new_study.excluded.updated_at,
            },
        )
        self._fast_cache = (insert_instance, upsert_study)
        return self._fast_cache

    def replace_instance(self, rec: InstanceRecord) -> None:
        """Overwrite an instance's index row (``dicom.overwrite_duplicates``)."""
        now = rec.received_at or utcnow()
        row = dict(rec.__dict__, received_at=now)
        with self._write() as conn:
            conn.execute(
                instances.delete().where(instances.c.sop_instance_uid == rec.sop_instance_uid)
            )
            conn.execute(instances.insert().values(**row))
            self._touch_study(conn, rec.study_instance_uid, now)

    def _touch_study(self, conn: Connection, study_uid: str, now: dt.datetime) -> None:
        updated = conn.execute(
            studies.update()
            .where(studies.c.study_instance_uid == study_uid)
            .values(status="receiving", last_instance_at=now, updated_at=now)
        ).rowcount
        if not updated:
            conn.execute(
                studies.insert().values(
                    study_instance_uid=study_uid,
                    status="receiving",
                    received_at=now,
                    last_instance_at=now,
                    updated_at=now,
                )
            )

    def get_instance(self, sop_instance_uid: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(instances).where(instances.c.sop_instance_uid == sop_instance_uid)
                )
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(instances)
                .where(instances.c.study_instance_uid == study_uid)
                .order_by(instances.c.series_instance_uid, instances.c.instance_number)
            ).mappings()
            return [dict(r) for r in rows]

    def count_instances(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar_one())

    def latest_instances(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recently received instances (newest first)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(instances).order_by(instances.c.received_at.desc()).limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    def delete_instance(self, sop_instance_uid: str) -> bool:
        """Remove an instance's row (its file is gone); a study left empty is removed too."""
        with self._write() as conn:
            study = conn.execute(
                sa.select(instances.c.study_instance_uid).where(
                    instances.c.sop_instance_uid == sop_instance_uid
                )
            ).scalar()
            if study is None:
                return False
            conn.execute(instances.delete().where(instances.c.sop_instance_uid == sop_instance_uid))
            left = conn.execute(
                sa.select(sa.func.count())
                .select_from(instances)
                .where(instances.c.study_instance_uid == study)
            ).scalar_one()
            if not left:
                conn.execute(
                    studies.delete().where(
                        studies.c.study_instance_uid == study, studies.c.status == "receiving"
                    )
                )
            return True

    # ------------------------------------------------------------------ studies
    def list_studies(self, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        counts = (
            sa.select(instances.c.study_instance_uid, sa.func.count().label("instances"))
            .group_by(instances.c.study_instance_uid)
            .subquery()
        )
        query = (
            sa.select(studies, sa.func.coalesce(counts.c.instances, 0).label("instances"))
            .select_from(
                studies.outerjoin(
                    counts, counts.c.study_instance_uid == studies.c.study_instance_uid
                )
            )
            .order_by(studies.c.received_at)
            .limit(limit)
        )
        if status:
            query = query.where(studies.c.status == status)
        with self.engine.connect() as conn:
            return [_study_row(r) for r in conn.execute(query).mappings()]

    def get_study(self, study_uid: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(studies).where(studies.c.study_instance_uid == study_uid))
                .mappings()
                .first()
            )
            if row is None:
                return None
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(instances)
                .where(instances.c.study_instance_uid == study_uid)
            ).scalar_one()
            return _study_row({**row, "instances": count})

    def set_study_status(
        self,
        study_uid: str,
        status: str,
        *,
        reason: str | None = None,
        priority: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        if status not in STUDY_STATUSES:
            raise ValueError(f"unknown study status {status!r}")
        values: dict[str, Any] = {"status": status, "updated_at": utcnow(), "reason": reason}
        if priority is not None:
            values["priority"] = priority
        if result is not None:
            values["result_json"] = json.dumps(result)
        with self._write() as conn:
            conn.execute(
                studies.update().where(studies.c.study_instance_uid == study_uid).values(**values)
            )

    # ------------------------------------------------------------------ job queue
    def enqueue_idle_studies(
        self, idle_seconds: float, now: dt.datetime | None = None
    ) -> list[str]:
        """Turn every study idle for ``idle_seconds`` into a queued job; returns their UIDs."""
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=idle_seconds)
        queued: list[str] = []
        with self._write() as conn:
            rows = conn.execute(
                sa.select(studies.c.study_instance_uid)
                .where(studies.c.status == "receiving", studies.c.last_instance_at <= cutoff)
                .with_for_update(skip_locked=True)
            ).all()
            for (uid,) in rows:
                moved = conn.execute(
                    studies.update()
                    .where(studies.c.study_instance_uid == uid, studies.c.status == "receiving")
                    .values(status="queued", updated_at=now)
                ).rowcount
                if not moved:
                    continue  # another instance queued it first
                pending = conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.study_instance_uid == uid, jobs.c.status == "queued"
                    )
                ).first()
                if pending is None:
                    conn.execute(
                        jobs.insert().values(
                            study_instance_uid=uid, status="queued", attempts=0, created_at=now
                        )
                    )
                queued.append(uid)
        return queued

    def enqueue_study(self, study_uid: str) -> int:
        """Queue a study now (re-processing on request); returns the job id."""
        now = utcnow()
        with self._write() as conn:
            job_id = conn.execute(
                jobs.insert().values(
                    study_instance_uid=study_uid, status="queued", attempts=0, created_at=now
                )
            ).inserted_primary_key[0]
            conn.execute(
                studies.update()
                .where(studies.c.study_instance_uid == study_uid)
                .values(status="queued", updated_at=now)
            )
            return int(job_id)

    def claim_job(self, worker_id: str, lease_seconds: float = 300.0) -> Job | None:
        """Claim the oldest queued job, or one whose lease expired (its worker died).

        The claim is a guarded ``UPDATE`` (it only succeeds while the job is still claimable), so
        two workers — threads or processes, SQLite or PostgreSQL — never both get the same job.
        """
        for _ in range(20):
            now = utcnow()
            # A queued job's ``lease_until`` is its back-off: not claimable before that time.
            claimable = sa.or_(
                sa.and_(
                    jobs.c.status == "queued",
                    sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until <= now),
                ),
                sa.and_(jobs.c.status == "processing", jobs.c.lease_until < now),
            )
            with self._write() as conn:
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
                        status="processing",
                        attempts=row.attempts + 1,
                        claimed_at=now,
                        lease_until=now + dt.timedelta(seconds=lease_seconds),
                        claimed_by=worker_id,
                    )
                ).rowcount
                if not claimed:
                    continue  # another worker was faster; look again
                conn.execute(
                    studies.update()
                    .where(studies.c.study_instance_uid == row.study_instance_uid)
                    .values(status="processing", updated_at=now)
                )
                return Job(row.id, row.study_instance_uid, row.attempts + 1)
        return None

    def release_jobs_of(self, worker_id: str | None = None) -> int:
        """Re-queue ``processing`` jobs (all, or one worker's) after a restart."""
        with self._write() as conn:
            query = jobs.update().where(jobs.c.status == "processing")
            if worker_id is not None:
                query = query.where(jobs.c.claimed_by == worker_id)
            return conn.execute(query.values(status="queued", lease_until=None)).rowcount

    def renew_lease(self, job_id: int, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease of a job this worker still holds; False when it no longer does
        (finished, or taken over by another worker after the lease ran out)."""
        with self._write() as conn:
            return bool(
                conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.status == "processing",
                        jobs.c.claimed_by == worker_id,
                    )
                    .values(lease_until=utcnow() + dt.timedelta(seconds=lease_seconds))
                ).rowcount
            )

    def finish_job(
        self,
        job_id: int,
        status: str,
        *,
        error: str | None = None,
        retry_after_s: float = 0.0,
    ) -> None:
        """Mark a job ``done``, ``failed``, ``not-processed``, or back to ``queued`` for a retry
        that no worker claims before ``retry_after_s`` seconds have passed (back-off)."""
        if status not in ("done", "failed", "not-processed", "queued"):
            raise ValueError(f"bad job status {status!r}")
        now = utcnow()
        hold = None
        if status == "queued" and retry_after_s > 0:
            hold = now + dt.timedelta(seconds=retry_after_s)
        with self._write() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(
                    status=status,
                    finished_at=None if status == "queued" else now,
                    lease_until=hold,
                    error=error,
                )
            )

    def jobs_for_study(self, study_uid: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs).where(jobs.c.study_instance_uid == study_uid).order_by(jobs.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def queue_depth(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "queued")
                ).scalar_one()
            )

    # ------------------------------------------------------------------ outbox
    def add_to_outbox(self, items: Sequence[tuple[str, str, str, str]]) -> int:
        """Queue result objects ``(sop_instance_uid, study_uid, kind, path)``, all or none.

        An object whose UID is already in the outbox is left as it is (re-processing the same
        study with the same models yields the same UIDs and must not send twice).
        """
        now = utcnow()
        added = 0
        with self._write() as conn:
            for sop_uid, study_uid, kind, path in items:
                exists = conn.execute(
                    sa.select(outbox.c.id).where(outbox.c.sop_instance_uid == sop_uid)
                ).first()
                if exists is not None:
                    continue
                conn.execute(
                    outbox.insert().values(
                        sop_instance_uid=sop_uid,
                        study_instance_uid=study_uid,
                        kind=kind,
                        path=path,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                added += 1
        return added

    def due_outbox(self, limit: int = 50, now: dt.datetime | None = None) -> list[OutboxItem]:
        now = now or utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(outbox)
                .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
                .order_by(outbox.c.id)
                .limit(limit)
            ).mappings()
            return [
                OutboxItem(
                    r["id"],
                    r["sop_instance_uid"],
                    r["study_instance_uid"],
                    r["kind"],
                    r["path"],
                    r["attempts"],
                    r["refusals"],
                )
                for r in rows
            ]

    def claim_outbox(self, item_ids: Sequence[int], lease_seconds: float = 60.0) -> set[int]:
        """Claim due items for one send: a guarded ``UPDATE`` moves ``next_attempt_at`` past the
        lease, so a second sender (another instance on the same database) skips them; a sender
        that dies mid-send leaves them due again after the lease. Returns the ids claimed."""
        now = utcnow()
        claimed: set[int] = set()
        with self._write() as conn:
            for item_id in item_ids:
                moved = conn.execute(
                    outbox.update()
                    .where(
                        outbox.c.id == item_id,
                        outbox.c.status == "pending",
                        outbox.c.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=now + dt.timedelta(seconds=lease_seconds))
                ).rowcount
                if moved:
                    claimed.add(item_id)
        return claimed

    def outbox_sent(self, item_id: int) -> None:
        with self._write() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id == item_id)
                .values(status="sent", sent_at=utcnow(), attempts=outbox.c.attempts + 1)
            )

    def outbox_retry(
        self, item_id: int, delay_seconds: float, error: str, *, refused: bool = False
    ) -> None:
        """Try again after ``delay_seconds``; ``refused`` counts a PACS failure status (bounded
        by ``pacs.send_max_attempts``), as opposed to an unreachable PACS (retried until it is
        back)."""
        values: dict[str, Any] = {
            "attempts": outbox.c.attempts + 1,
            "next_attempt_at": utcnow() + dt.timedelta(seconds=delay_seconds),
            "last_error": error,
        }
        if refused:
            values["refusals"] = outbox.c.refusals + 1
        with self._write() as conn:
            conn.execute(outbox.update().where(outbox.c.id == item_id).values(**values))

    def outbox_dead(self, item_id: int, error: str) -> None:
        with self._write() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id == item_id)
                .values(
                    status="dead",
                    attempts=outbox.c.attempts + 1,
                    refusals=outbox.c.refusals + 1,
                    last_error=error,
                )
            )

    def list_outbox(
        self, status: str | None = None, study_uid: str | None = None
    ) -> list[dict[str, Any]]:
        query = sa.select(outbox).order_by(outbox.c.id)
        if status:
            query = query.where(outbox.c.status == status)
        if study_uid:
            query = query.where(outbox.c.study_instance_uid == study_uid)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _study_row(row: Any) -> dict[str, Any]:
    data = dict(row)
    for key in ("received_at", "last_instance_at", "updated_at"):
        data[key] = _aware(data.get(key))
    raw = data.pop("result_json", None)
    data["result"] = json.loads(raw) if raw else None
    return data
