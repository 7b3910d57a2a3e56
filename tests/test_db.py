"""The index, job queue and outbox: the transactions the durability rules rest on."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from medgate.store.db import Index
from medgate.store.engine import utcnow
from medgate.store.instances import InstanceRecord
from medgate.store.jobs import ClaimLost
from medgate.store.schema import jobs, outbox
from medgate.store.status import JobStatus, StudyStatus
from medgate.store.studies import StudyRow


def _record(study: str, sop: str, **kw: object) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=study + ".1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=10,
        sha256="0" * 64,
        path=f"/x/{sop}.dcm",
        **kw,  # type: ignore[arg-type]
    )


def _study(index: Index, uid: str) -> StudyRow:
    row = index.studies.get(uid)
    assert row is not None
    return row


def test_record_once_then_study_becomes_a_job_after_idle(database_url: str) -> None:
    index = Index(database_url)
    assert index.instances.add(_record("1.2.3", "1.2.3.1"))
    assert not index.instances.add(_record("1.2.3", "1.2.3.1"))  # duplicate UID
    assert index.instances.add(_record("1.2.3", "1.2.3.2"))
    assert _study(index, "1.2.3").instances == 2
    assert index.jobs.enqueue_idle(3600) == []  # not idle yet
    later = utcnow() + dt.timedelta(seconds=20)
    assert index.jobs.enqueue_idle(10, now=later) == ["1.2.3"]
    assert _study(index, "1.2.3").status == "queued"
    assert index.jobs.enqueue_idle(10, now=later) == []  # queued once
    job = index.jobs.claim("w1")
    assert job is not None and job.study_instance_uid == "1.2.3" and job.attempts == 1
    assert _study(index, "1.2.3").status == "processing"
    assert index.jobs.complete(job, {"findings": []}, []) == 0
    assert _study(index, "1.2.3").status == StudyStatus.DONE
    # A late instance re-opens the completed study and it is queued again.
    assert index.instances.add(_record("1.2.3", "1.2.3.3"))
    assert _study(index, "1.2.3").status == "receiving"
    assert index.jobs.enqueue_idle(10, now=utcnow() + dt.timedelta(seconds=20)) == ["1.2.3"]


def test_each_job_is_claimed_once_by_concurrent_workers(database_url: str) -> None:
    index = Index(database_url)
    for n in range(30):
        index.instances.add(_record(f"1.2.{n}", f"1.2.{n}.1"))
        index.jobs.enqueue(f"1.2.{n}")
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        other = Index(index.url, create=False)  # its own engine, as another process would have
        while (job := other.jobs.claim(name)) is not None:
            with lock:
                claimed.append(job.study_instance_uid)
            other.jobs.complete(job, {}, [])

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(f"1.2.{n}" for n in range(30))


def test_a_retried_job_waits_for_its_back_off(database_url: str) -> None:
    index = Index(database_url)
    index.instances.add(_record("7.7", "7.7.1"))
    index.jobs.enqueue("7.7")
    job = index.jobs.claim("w1")
    assert job is not None
    assert index.jobs.finish(job, JobStatus.QUEUED, error="model down", retry_after_s=3600)
    assert _study(index, "7.7").status == StudyStatus.QUEUED
    assert index.jobs.claim("w2") is None  # held back
    assert index.jobs.depth() == 1  # still queued, nothing lost
    with index.engine.begin() as conn:  # the back-off is over
        conn.execute(jobs.update().values(lease_until=None))
    again = index.jobs.claim("w2")
    assert again is not None and again.id == job.id and again.attempts == 2


def test_lease_renewal_keeps_a_slow_job_from_being_taken_over(database_url: str) -> None:
    index = Index(database_url)
    index.instances.add(_record("8.8", "8.8.1"))
    index.jobs.enqueue("8.8")
    job = index.jobs.claim("slow-worker", lease_seconds=-1)  # lease already over ...
    assert job is not None
    assert index.jobs.renew(job, 3600)  # ... renewed in time
    assert index.jobs.claim("other") is None
    assert not index.jobs.renew(replace(job, worker_id="other"), 3600)  # only the holder renews
    index.jobs.complete(job, {}, [])
    assert not index.jobs.renew(job, 3600)  # finished: nothing to renew


def test_retry_delay_doubles_up_to_the_cap(settings_factory) -> None:
    from medgate.pipeline.worker import retry_delay

    settings = settings_factory(
        routing={"retry_backoff_seconds": 2.0, "retry_backoff_max_seconds": 5.0}
    )
    assert [retry_delay(settings, n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


def test_expired_lease_is_claimed_again_and_restart_requeues(database_url: str) -> None:
    index = Index(database_url)
    index.instances.add(_record("9.9", "9.9.1"))
    index.jobs.enqueue("9.9")
    first = index.jobs.claim("dead-worker", lease_seconds=-1)  # lease already over
    assert first is not None
    second = index.jobs.claim("live-worker")
    assert second is not None and second.id == first.id and second.attempts == 2
    assert index.jobs.release("live-worker") == 1
    restarted = index.jobs.claim("restarted")
    assert restarted is not None and restarted.id == first.id


def test_a_taken_over_job_writes_nothing_from_its_first_worker(database_url: str) -> None:
    """The dead-looking worker comes back after the takeover: its results, its failure and its
    lease renewal are all refused, in the transaction that would have written them."""
    index = Index(database_url)
    index.instances.add(_record("9.8", "9.8.1"))
    index.jobs.enqueue("9.8")
    stale = index.jobs.claim("paused-worker", lease_seconds=-1)
    assert stale is not None
    fresh = index.jobs.claim("live-worker")
    assert fresh is not None and fresh.attempts == stale.attempts + 1
    late = [("9.8.100", "9.8", "sr", "/r/9.8.100.dcm")]
    with pytest.raises(ClaimLost):
        index.jobs.complete(stale, {"priority": "routine"}, late)
    assert not index.jobs.finish(stale, JobStatus.FAILED, error="late failure")
    assert not index.jobs.renew(stale, 60)
    assert index.outbox.list() == []  # the late results were not queued
    assert _study(index, "9.8").status == StudyStatus.PROCESSING
    assert index.jobs.complete(fresh, {"priority": "routine"}, late) == 1
    study = _study(index, "9.8")
    assert study.status == StudyStatus.DONE and study.results_built_at is not None
    assert [item.sop_instance_uid for item in index.outbox.list()] == ["9.8.100"]
    assert [row.status for row in index.jobs.of_study("9.8")] == [JobStatus.DONE]


def test_outbox_keeps_one_row_per_uid_and_moves_to_sent_or_dead(database_url: str) -> None:
    index = Index(database_url)
    assert (
        index.outbox.add([("5.1", "5", "sr", "/r/5.1.dcm"), ("5.2", "5", "seg", "/r/5.2.dcm")]) == 2
    )
    assert index.outbox.add([("5.1", "5", "sr", "/r/5.1.dcm")]) == 0  # re-processing: no duplicate
    due = index.outbox.due()
    assert [d.sop_instance_uid for d in due] == ["5.1", "5.2"]
    index.outbox.retry(due[0].id, 0, "association refused")  # unreachable: no refusal
    index.outbox.retry(due[0].id, 3600, "0xA700", refused=True)
    assert [d.sop_instance_uid for d in index.outbox.due()] == ["5.2"]
    index.outbox.sent(due[1].id)
    index.outbox.dead(due[0].id, "0xA700")
    rows = {row.sop_instance_uid: row for row in index.outbox.list()}
    assert {uid: row.status for uid, row in rows.items()} == {"5.1": "dead", "5.2": "sent"}
    assert (rows["5.1"].attempts, rows["5.1"].refusals) == (3, 2)
    assert index.outbox.due() == []
    assert index.outbox.delivery("5").state == "dead-letter"


def test_outbox_items_are_claimed_by_one_sender(database_url: str) -> None:
    index = Index(database_url)
    index.outbox.add([(f"7.{n}", "7", "sr", f"/r/7.{n}.dcm") for n in range(10)])
    other = Index(database_url, create=False)  # a second instance on the same database
    ids = [item.id for item in index.outbox.due()]
    first = index.outbox.claim(ids)
    second = other.outbox.claim(ids)
    assert first.ids == set(ids) and second.ids == set()
    assert index.outbox.due() == []  # claimed items wait out their lease
    expired = other.outbox.claim(ids, lease_seconds=-1)  # nothing due yet: still leased
    assert expired.ids == set()


def test_an_outbox_lease_is_renewed_by_its_holder_only(database_url: str) -> None:
    index = Index(database_url)
    index.outbox.add([(f"4.{n}", "4", "sr", f"/r/4.{n}.dcm") for n in range(3)])
    ids = [item.id for item in index.outbox.due()]
    short = index.outbox.claim(ids, lease_seconds=-1)  # lease already over ...
    renewed = index.outbox.renew(short, 3600)  # ... renewed before anyone took it
    assert renewed is not None and renewed.lease_until > short.lease_until
    assert index.outbox.due() == []
    assert index.outbox.renew(short, 3600) is None  # the old lease end is no longer the claim
    with index.engine.begin() as conn:  # the holder stalls past its lease; another sender claims
        conn.execute(outbox.update().values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
    taken = index.outbox.claim(ids)
    assert taken.ids == set(ids)
    assert index.outbox.renew(renewed, 3600) is None  # the stalled holder learns it lost them
    assert index.outbox.renew(taken, 3600) is not None


def test_a_study_is_delivered_only_when_every_object_is_confirmed(database_url: str) -> None:
    index = Index(database_url)
    assert index.outbox.delivery("3").state == "none"
    index.outbox.add([("3.1", "3", "sr", "/r/3.1.dcm"), ("3.2", "3", "seg", "/r/3.2.dcm")])
    first, second = index.outbox.due()
    index.outbox.sent(first.id)
    pending = index.outbox.delivery("3")
    assert (pending.state, pending.confirmed, pending.confirmed_at) == ("pending", 1, None)
    index.outbox.sent(second.id)
    delivered = index.outbox.delivery("3")
    assert delivered.state == "delivered" and delivered.objects == 2
    sent_at = {item.sent_at for item in index.outbox.list(study_uid="3")}
    assert delivered.confirmed_at == max(sent_at)  # type: ignore[type-var]


def test_the_raw_sqlite3_write_stores_the_rows_sqlalchemy_stores(tmp_path: Path) -> None:
    """One write path, two executors: a SQLite file runs ``add``'s compiled statements on raw
    sqlite3, in-memory SQLite runs them through SQLAlchemy; both read back the same rows."""
    when = dt.datetime(2026, 12, 4, 9, 30, 1, 123456, tzinfo=dt.UTC)
    extra = {
        "modality": "CT",
        "body_part": "CHEST",
        "series_description": "Thorax 1.0 B31f äöü",
        "instance_number": 7,
        "calling_ae": "MODALITY1",
        "received_at": when,
    }
    on_file = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    in_memory = Index("sqlite://")
    try:
        assert on_file.instances._hot is not None and in_memory.instances._hot is None
        rows = []
        for index in (on_file, in_memory):
            assert index.instances.add(_record("5.5", "5.5.1", **extra))
            rows.append((index.instances.get("5.5.1"), index.studies.get("5.5")))
        assert rows[0] == rows[1]
        instance, study = rows[0]
        assert instance is not None and instance.received_at == when
        assert instance.series_description == "Thorax 1.0 B31f äöü"
        assert study is not None and study.status == "receiving"
        assert study.last_instance_at == when
    finally:
        on_file.close()
        in_memory.close()


def test_index_instance_detects_a_duplicate_and_reopens_the_study(database_url: str) -> None:
    index = Index(database_url)
    try:
        first = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)
        assert index.instances.add(_record("7.1", "7.1.1", received_at=first))
        assert not index.instances.add(_record("7.1", "7.1.1", received_at=first))
        assert index.instances.count() == 1
        study = index.studies.get("7.1")
        assert study is not None and study.last_instance_at == first  # a duplicate: untouched
        index.studies.set_status("7.1", "done")
        later = first + dt.timedelta(minutes=5)
        assert index.instances.add(_record("7.1", "7.1.2", received_at=later))
        study = index.studies.get("7.1")
        assert study is not None and study.status == "receiving"
        assert study.last_instance_at == later and study.received_at == first
        assert study.instances == 2
    finally:
        index.close()


def test_index_instance_from_many_threads_at_once(database_url: str) -> None:
    """Eight receivers (associations) indexing at the same moment, every instance sent twice:
    every row lands once, and exactly one of the two callers hears that its row was new."""
    import threading

    index = Index(database_url)
    try:
        start = threading.Barrier(8)
        answers: dict[str, list[bool]] = {}

        def receiver(number: int) -> None:
            start.wait()
            mine = answers.setdefault(str(number), [])
            for k in range(25):
                # every instance is sent twice, by two receivers: one of them indexes it
                sop = f"8.{number // 2}.{k}"
                mine.append(index.instances.add(_record(f"8.{number // 2}", sop)))

        threads = [threading.Thread(target=receiver, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert index.instances.count() == 4 * 25
        assert sum(sum(a) for a in answers.values()) == 4 * 25  # each row new exactly once
        for pair in range(4):
            study = index.studies.get(f"8.{pair}")
            assert study is not None and study.instances == 25
            assert study.status == "receiving"
    finally:
        index.close()


# ---------------------------------------------------------------- the receiver's sqlite3 hot path
@pytest.fixture
def file_index(tmp_path: Path) -> Iterator[Index]:
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    yield index
    index.close()


def test_a_failing_statement_rolls_back_the_whole_commit(file_index: Index) -> None:
    assert file_index.instances.add(_record("7.7", "7.7.1"))
    upsert = file_index.instances._hot_upsert
    assert upsert is not None
    good_sql = upsert.sql
    upsert.sql = "INSERT INTO no_such_table VALUES (?, ?, ?, ?)"  # the second step fails
    try:
        with pytest.raises(sqlite3.OperationalError):
            file_index.instances.add(_record("7.7", "7.7.2"))
    finally:
        upsert.sql = good_sql
    assert file_index.instances.get("7.7.2") is None  # the first step was rolled back with it
    assert file_index.instances.add(_record("7.7", "7.7.2"))
    assert file_index.instances.get("7.7.2") is not None
    assert file_index.instances.add(_record("7.7", "7.7.2")) is False  # a duplicate: nothing


def test_another_writer_is_waited_for_not_failed(file_index: Index, tmp_path: Path) -> None:
    assert file_index.instances.add(_record("7.7", "7.7.1"))  # the hot path exists
    other = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    result: list[bool] = []
    writer = threading.Thread(
        target=lambda: result.append(file_index.instances.add(_record("7.7", "7.7.3")))
    )
    writer.start()
    writer.join(timeout=0.5)
    assert writer.is_alive() and not result  # waiting on the lock, not failed
    other.execute("COMMIT")
    other.close()
    writer.join(timeout=30)
    assert result == [True]
    assert file_index.instances.get("7.7.3") is not None
