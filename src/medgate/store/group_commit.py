"""Group commit: the index rows of concurrent C-STOREs share one transaction and one fsync.

Why: every C-STORE waits for its index row to be committed (``synchronous=FULL``: one WAL fsync,
2-3 ms on the test machine's disk) before its success status, and SQLite has one writer, so with
several associations the commits queue behind each other and the fsyncs, not the work, set the
pace. Here the first caller to find no commit running becomes the *leader*: it takes every row
waiting at that moment and commits them together; callers that arrive meanwhile wait and are
served by the next leader. Nobody waits for a timer, so one association alone pays nothing
extra, and each caller still returns only after its own row is durable (the acknowledgement
rule is unchanged). ``bench/ingest.py`` gives the figure.

If a batch fails, each of its entries is retried alone, so one bad row fails only its own store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Entry(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit(Generic[Item, Result]):
    """Leader/follower batching of ``commit_batch`` calls across threads.

    ``commit_batch(items)`` commits all ``items`` in one transaction and returns one result per
    item, in order; ``commit_one(item)`` commits a single item (used to isolate a failing one).
    """

    def __init__(
        self,
        commit_batch: Callable[[Sequence[Item]], list[Result]],
        commit_one: Callable[[Item], Result],
    ) -> None:
        self._commit_batch = commit_batch
        self._commit_one = commit_one
        self._changed = threading.Condition()
        self._pending: list[_Entry[Item, Result]] = []
        self._leading = False
        self.batches = 0  # commits made, for tests and the bench
        self.items = 0

    def submit(self, item: Item) -> Result:
        """Commit ``item`` (alone or with others) and return its result, or raise its error."""
        entry: _Entry[Item, Result] = _Entry(item)
        with self._changed:
            self._pending.append(entry)
            while self._leading and not entry.done:
                self._changed.wait()
            if not entry.done:
                self._leading = True
                batch, self._pending = self._pending, []
            else:
                batch = []
        if batch:
            try:
                self._run(batch)
            except BaseException as exc:  # interrupted: nobody of this batch waits forever
                for taken in batch:
                    if not taken.done:
                        self._finish(taken, None, exc)
                raise
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]  # set whenever error is not

    def _run(self, batch: list[_Entry[Item, Result]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = self._commit_batch([entry.item for entry in batch])
        except Exception as exc:
            if len(batch) == 1:
                self._finish(batch[0], None, exc)
                return
            for entry in batch:  # one at a time: the failure stays with the entry that caused it
                try:
                    self._finish(entry, self._commit_one(entry.item), None)
                except Exception as single:
                    self._finish(entry, None, single)
            return
        for entry, result in zip(batch, results, strict=True):
            self._finish(entry, result, None)

    @staticmethod
    def _finish(
        entry: _Entry[Item, Result], result: Result | None, error: BaseException | None
    ) -> None:
        entry.result, entry.error, entry.done = result, error, True
