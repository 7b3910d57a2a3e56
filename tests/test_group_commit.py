"""Group commit of index rows (``medgate.store.group_commit``): callers that arrive while a
commit runs share the next one, each hears its own result, and a failing row fails alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from medgate.store.db import Index
from medgate.store.group_commit import GroupCommit
from medgate.store.instances import InstanceRecord

COMMIT_S = 0.02  # a slow fsync, so that callers pile up behind the leader


def _slow_squares() -> tuple[GroupCommit[int, int], list[list[int]]]:
    seen: list[list[int]] = []

    def batch(items: Sequence[int]) -> list[int]:
        time.sleep(COMMIT_S)
        seen.append(list(items))
        return [item * item for item in items]

    return GroupCommit(batch, lambda item: item * item), seen


def _run_threads(count: int, work) -> None:
    start = threading.Barrier(count)

    def run(number: int) -> None:
        start.wait()
        work(number)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()


def test_concurrent_callers_share_commits_and_each_gets_its_own_result() -> None:
    group, seen = _slow_squares()
    results: dict[int, int] = {}

    def work(number: int) -> None:
        for k in range(5):
            item = number * 100 + k
            results[item] = group.submit(item)

    _run_threads(8, work)
    assert results == {item: item * item for item in results} and len(results) == 40
    assert sorted(i for batch in seen for i in batch) == sorted(results)  # each committed once
    assert group.items == 40
    assert group.batches < 40 and max(len(batch) for batch in seen) > 1  # they were grouped


def test_one_caller_alone_commits_at_once() -> None:
    group, seen = _slow_squares()
    assert [group.submit(n) for n in range(3)] == [0, 1, 4]
    assert seen == [[0], [1], [2]]


def test_a_failing_item_fails_alone_and_the_others_are_committed() -> None:
    committed: list[int] = []
    lock = threading.Lock()

    def batch(items: Sequence[int]) -> list[int]:
        time.sleep(COMMIT_S)
        if 13 in items:
            raise ValueError("row 13 breaks the transaction")
        with lock:
            committed.extend(items)
        return list(items)

    def one(item: int) -> int:
        return batch([item])[0]

    group: GroupCommit[int, int] = GroupCommit(batch, one)
    outcome: dict[int, object] = {}

    def work(number: int) -> None:
        item = 10 + number
        try:
            outcome[item] = group.submit(item)
        except ValueError as exc:
            outcome[item] = exc

    _run_threads(6, work)
    assert isinstance(outcome.pop(13), ValueError)
    assert outcome == {item: item for item in outcome} and len(outcome) == 5
    assert sorted(committed) == sorted(outcome)  # every other row is in, once


def _record(sop: str) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        study_instance_uid="9.9",
        series_instance_uid="9.9.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=10,
        sha256="0" * 64,
        path=f"/x/{sop}.dcm",
    )


def test_grouped_instance_rows_land_once_with_duplicates_across_batches(tmp_path: Path) -> None:
    """Four associations index the same 30 instances at once on an SQLite file: one row each,
    and exactly one caller per instance hears it was new, whichever batches they fell into."""
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        new: list[bool] = []
        lock = threading.Lock()

        def work(_number: int) -> None:
            for k in range(30):
                answer = index.instances.add(_record(f"9.9.1.{k}"))
                with lock:
                    new.append(answer)

        _run_threads(4, work)
        assert index.instances.count() == 30
        assert sum(new) == 30 and len(new) == 120
        study = index.studies.get("9.9")
        assert study is not None and study.instances == 30
    finally:
        index.close()


def test_a_commit_interrupted_by_a_base_exception_releases_every_waiter() -> None:
    calls = 0

    def batch(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        time.sleep(COMMIT_S)
        if calls == 1:
            raise KeyboardInterrupt
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(batch, lambda item: item)
    with pytest.raises(KeyboardInterrupt):
        group.submit(1)
    assert group.submit(2) == 2  # the next caller leads a fresh commit
