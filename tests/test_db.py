"""The index, job queue and outbox: the transactions the durability rules rest on."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest

from medgate.store.db import Index, InstanceRecord, utcnow


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


def test_record_once_then_study_becomes_a_job_after_idle(database_url: str) -> None:
    index = Index(database_url)
    assert index.record_instance(_record("1.2.3", "1.2.3.1"))
    assert not index.record_instance(_record("1.2.3", "1.2.3.1"))  # duplicate UID
    assert index.record_instance(_record("1.2.3", "1.2.3.2"))
    assert index.get_study("1.2.3")["instances"] == 2
    assert index.enqueue_idle_studies(3600) == []  # not idle yet
    later = utcnow() + dt.timedelta(seconds=20)
    assert index.enqueue_idle_studies(10, now=later) == ["1.2.3"]
    assert index.get_study("1.2.3")["status"] == "queued"
    assert index.enqueue_idle_studies(10, now=later) == []  # queued once
    job = index.claim_job("w1")
    assert job is not None and job.study_instance_uid == "1.2.3" and job.attempts == 1
    assert index.get_study("1.2.3")["status"] == "processing"
    index.finish_job(job.id, "done")
    index.set_study_status("1.2.3", "done", result={"findings": []})
    # A late instance re-opens the completed study and it is queued again.
    assert index.record_instance(_record("1.2.3", "1.2.3.3"))
    assert index.get_study("1.2.3")["status"] == "receiving"
    assert index.enqueue_idle_studies(10, now=utcnow() + dt.timedelta(seconds=20)) == ["1.2.3"]


def test_each_job_is_claimed_once_by_concurrent_workers(database_url: str) -> None:
    index = Index(database_url)
    for n in range(30):
        index.record_instance(_record(f"1.2.{n}", f"1.2.{n}.1"))
        index.enqueue_study(f"1.2.{n}")
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        other = Index(index.url, create=False)  # its own engine, as another process would have
        while (job := other.claim_job(name)) is not None:
            with lock:
                claimed.append(job.study_instance_uid)
            other.finish_job(job.id, "done")

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(f"1.2.{n}" for n in range(30))


def test_a_retried_job_waits_for_its_back_off(database_url: str) -> None:
    index = Index(database_url)
    index.record_instance(_record("7.7", "7.7.1"))
    index.enqueue_study("7.7")
    job = index.claim_job("w1")
    assert job is not None
    index.finish_job(job.id, "queued", error="model down", retry_after_s=3600)
    assert index.claim_job("w2") is None  # held back
    assert index.queue_depth() == 1  # still queued, nothing lost
    index.finish_job(job.id, "queued", error="model down", retry_after_s=0)
    again = index.claim_job("w2")
    assert again is not None and again.id == job.id and again.attempts == 2


def test_lease_renewal_keeps_a_slow_job_from_being_taken_over(database_url: str) -> None:
    index = Index(database_url)
    index.record_instance(_record("8.8", "8.8.1"))
    index.enqueue_study("8.8")
    job = index.claim_job("slow-worker", lease_seconds=-1)  # lease already over ...
    assert job is not None
    assert index.renew_lease(job.id, "slow-worker", 3600)  # ... renewed in time
    assert index.claim_job("other") is None
    assert not index.renew_lease(job.id, "other", 3600)  # only the holder renews
    index.finish_job(job.id, "done")
    assert not index.renew_lease(job.id, "slow-worker", 3600)  # finished: nothing to renew


def test_retry_delay_doubles_up_to_the_cap(settings_factory) -> None:
    from medgate.pipeline.worker import retry_delay

    settings = settings_factory(
        routing={"retry_backoff_seconds": 2.0, "retry_backoff_max_seconds": 5.0}
    )
    assert [retry_delay(settings, n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


def test_expired_lease_is_claimed_again_and_restart_requeues(database_url: str) -> None:
    index = Index(database_url)
    index.record_instance(_record("9.9", "9.9.1"))
    index.enqueue_study("9.9")
    first = index.claim_job("dead-worker", lease_seconds=-1)  # lease already over
    assert first is not None
    second = index.claim_job("live-worker")
    assert second is not None and second.id == first.id and second.attempts == 2
    assert index.release_jobs_of("live-worker") == 1
    assert index.claim_job("restarted").id == first.id


def test_outbox_keeps_one_row_per_uid_and_moves_to_sent_or_dead(database_url: str) -> None:
    index = Index(database_url)
    assert (
        index.add_to_outbox([("5.1", "5", "sr", "/r/5.1.dcm"), ("5.2", "5", "seg", "/r/5.2.dcm")])
        == 2
    )
    assert (
        index.add_to_outbox([("5.1", "5", "sr", "/r/5.1.dcm")]) == 0
    )  # re-processing: no duplicate
    due = index.due_outbox()
    assert [d.sop_instance_uid for d in due] == ["5.1", "5.2"]
    index.outbox_retry(due[0].id, 0, "association refused")  # unreachable: no refusal
    index.outbox_retry(due[0].id, 3600, "0xA700", refused=True)
    assert [d.sop_instance_uid for d in index.due_outbox()] == ["5.2"]
    index.outbox_sent(due[1].id)
    index.outbox_dead(due[0].id, "0xA700")
    rows = {row["sop_instance_uid"]: row for row in index.list_outbox()}
    assert {uid: row["status"] for uid, row in rows.items()} == {"5.1": "dead", "5.2": "sent"}
    assert (rows["5.1"]["attempts"], rows["5.1"]["refusals"]) == (3, 2)
    assert index.due_outbox() == []


def test_outbox_items_are_claimed_by_one_sender(database_url: str) -> None:
    index = Index(database_url)
    index.add_to_outbox([(f"7.{n}", "7", "sr", f"/r/7.{n}.dcm") for n in range(10)])
    other = Index(database_url, create=False)  # a second instance on the same database
    ids = [item.id for item in index.due_outbox()]
    first = index.claim_outbox(ids)
    second = other.claim_outbox(ids)
    assert first == set(ids) and second == set()
    assert index.due_outbox() == []  # claimed items wait out their lease
    expired = other.claim_outbox(ids, lease_seconds=-1)  # nothing due yet: still leased
    assert expired == set()


def _rows(index: Index, sop: str, study: str) -> tuple[dict, dict]:
    instance = index.get_instance(sop)
    study_row = index.get_study(study)
    assert instance is not None and study_row is not None
    return instance, study_row


def test_index_instance_gives_the_rows_of_record_instance(database_url: str) -> None:
    """The receiver's two-statement hot path and the portable ``record_instance`` write the
    same rows, on SQLite and on PostgreSQL."""
    index = Index(database_url)
    when = dt.datetime(2026, 12, 4, 9, 30, 1, 123456, tzinfo=dt.UTC)
    extra = {
        "modality": "CT",
        "body_part": "CHEST",
        "series_description": "Thorax 1.0 B31f äöü",
        "instance_number": 7,
        "calling_ae": "MODALITY1",
        "received_at": when,
    }
    try:
        assert index.index_instance(_record("5.5", "5.5.1", **extra))
        assert index.record_instance(_record("6.6", "6.6.1", **extra))
        fast_instance, fast_study = _rows(index, "5.5.1", "5.5")
        port_instance, port_study = _rows(index, "6.6.1", "6.6")
        for row in (fast_instance, port_instance):
            for key in ("sop_instance_uid", "study_instance_uid", "series_instance_uid", "path"):
                row.pop(key)
        assert fast_instance == port_instance
        assert fast_study.pop("study_instance_uid") == "5.5"
        assert port_study.pop("study_instance_uid") == "6.6"
        assert fast_study == port_study
        assert fast_study["status"] == "receiving" and fast_study["last_instance_at"] == when
    finally:
        index.close()


def test_index_instance_detects_a_duplicate_and_reopens_the_study(database_url: str) -> None:
    index = Index(database_url)
    try:
        first = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)
        assert index.index_instance(_record("7.1", "7.1.1", received_at=first))
        assert not index.index_instance(_record("7.1", "7.1.1", received_at=first))
        assert index.count_instances() == 1
        study = index.get_study("7.1")
        assert study is not None and study["last_instance_at"] == first  # a duplicate: untouched
        index.set_study_status("7.1", "done")
        later = first + dt.timedelta(minutes=5)
        assert index.index_instance(_record("7.1", "7.1.2", received_at=later))
        study = index.get_study("7.1")
        assert study is not None and study["status"] == "receiving"
        assert study["last_instance_at"] == later and study["received_at"] == first
        assert study["instances"] == 2
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
                mine.append(index.index_instance(_record(f"8.{number // 2}", sop)))

        threads = [threading.Thread(target=receiver, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert index.count_instances() == 4 * 25
        assert sum(sum(a) for a in answers.values()) == 4 * 25  # each row new exactly once
        for pair in range(4):
            study = index.get_study(f"8.{pair}")
            assert study is not None and study["instances"] == 25
            assert study["status"] == "receiving"
    finally:
        index.close()


# ---------------------------------------------------------------- the receiver's sqlite3 hot path
@pytest.fixture
def file_index(tmp_path: Path):  # type: ignore[no-untyped-def]
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    yield index
    index.close()


def test_the_file_database_uses_the_hot_path_and_memory_does_not(file_index: Index) -> None:
    assert file_index.index_instance(_record("7.7", "7.7.1"))
    assert file_index._sqlite_hot_path() is not None
    memory = Index("sqlite://")
    try:
        assert memory.index_instance(_record("7.7", "7.7.1"))
        assert memory._sqlite_hot_path() is None
        assert memory.get_instance("7.7.1") is not None
    finally:
        memory.close()


def test_a_failing_statement_rolls_back_the_whole_commit(file_index: Index) -> None:
    assert file_index.index_instance(_record("7.7", "7.7.1"))
    hot = file_index._sqlite_hot_path()
    assert hot is not None
    upsert = hot[2]
    good_sql = upsert.sql
    upsert.sql = "INSERT INTO no_such_table VALUES (?, ?, ?, ?)"  # the second step fails
    try:
        with pytest.raises(sqlite3.OperationalError):
            file_index.index_instance(_record("7.7", "7.7.2"))
    finally:
        upsert.sql = good_sql
    assert file_index.get_instance("7.7.2") is None  # the first step was rolled back with it
    assert file_index.index_instance(_record("7.7", "7.7.2"))
    assert file_index.get_instance("7.7.2") is not None
    assert file_index.index_instance(_record("7.7", "7.7.2")) is False  # a duplicate: nothing


def test_another_writer_is_waited_for_not_failed(file_index: Index, tmp_path: Path) -> None:
    assert file_index.index_instance(_record("7.7", "7.7.1"))  # the hot path exists
    other = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    result: list[bool] = []
    writer = threading.Thread(
        target=lambda: result.append(file_index.index_instance(_record("7.7", "7.7.3")))
    )
    writer.start()
    writer.join(timeout=0.5)
    assert writer.is_alive() and not result  # waiting on the lock, not failed
    other.execute("COMMIT")
    other.close()
    writer.join(timeout=30)
    assert result == [True]
    assert file_index.get_instance("7.7.3") is not None
