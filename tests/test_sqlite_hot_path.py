"""The receiver's index commit on a raw sqlite3 connection: all or nothing, and patient with
other writers (the rows themselves are compared with SQLAlchemy's in tests/test_db.py)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from medgate.db import Index, InstanceRecord


def _record(sop: str, study: str = "7.7") -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=study + ".1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=10,
        sha256="0" * 64,
        path=f"/x/{sop}.dcm",
    )


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    yield index
    index.close()


def test_the_file_database_uses_the_hot_path_and_memory_does_not(index: Index) -> None:
    assert index.index_instance(_record("7.7.1"))
    assert index._sqlite_hot_path() is not None
    memory = Index("sqlite://")
    try:
        assert memory.index_instance(_record("7.7.1"))
        assert memory._sqlite_hot_path() is None
        assert memory.get_instance("7.7.1") is not None
    finally:
        memory.close()


def test_a_failing_statement_rolls_back_the_whole_commit(index: Index) -> None:
    assert index.index_instance(_record("7.7.1"))
    hot = index._sqlite_hot_path()
    assert hot is not None
    upsert = hot[2]
    good_sql = upsert.sql
    upsert.sql = "INSERT INTO no_such_table VALUES (?, ?, ?, ?)"  # the second step fails
    try:
        with pytest.raises(sqlite3.OperationalError):
            index.index_instance(_record("7.7.2"))
    finally:
        upsert.sql = good_sql
    assert index.get_instance("7.7.2") is None  # the first step was rolled back with it
    assert index.index_instance(_record("7.7.2"))
    assert index.get_instance("7.7.2") is not None
    assert index.index_instance(_record("7.7.2")) is False  # a duplicate inserts nothing


def test_another_writer_is_waited_for_not_failed(index: Index, tmp_path: Path) -> None:
    assert index.index_instance(_record("7.7.1"))  # the hot path exists
    other = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    result: list[bool] = []
    writer = threading.Thread(target=lambda: result.append(index.index_instance(_record("7.7.3"))))
    writer.start()
    writer.join(timeout=0.5)
    assert writer.is_alive() and not result  # waiting on the lock, not failed
    other.execute("COMMIT")
    other.close()
    writer.join(timeout=30)
    assert result == [True]
    assert index.get_instance("7.7.3") is not None
