"""Empty files made ahead of time, so that a durable instance write costs one journal commit.

Why: the classic atomic write (create a temporary file, write, ``fdatasync``, rename, ``fsync``
the folder) makes the file system commit its journal twice per file (the new file's inode and
size, then the rename), and creating the file has to wait for a journal handle while another
commit (the index's) is running. On one DICOM association the peer waits for every one of these
before it sends the next instance, so they set the receive rate.

A ``FilePool`` creates empty files in its own folder in batches, on a background thread, and
``fsync``-s the folder once per batch: when ``write`` takes one, its name is already durable.
``write`` fills it, ``fdatasync``-s it (data and size: one journal commit) and renames it to its
final name. That rename is visible at once but becomes durable with the next journal commit
(the next instance's ``fdatasync`` or the next batch). A crash in between leaves the complete,
durable file in the pool folder, and the store's recovery renames it into place when the index
row it was acknowledged with matches it (size and sha256); a file that matches no row was never
acknowledged and is deleted. So a file is still either complete under its final name or absent
from it, and an acknowledged instance survives power loss.

Several processes may share one storage folder: each pool lives in ``<root>/.pool/<owner>/``
and its owner holds an exclusive ``flock`` on ``<owner>.lock`` for as long as it runs. Recovery
(``abandoned_pools``) only touches pools whose lock it can take, i.e. whose owner has exited.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

POOL_FOLDER = ".pool"
"""Folder under the storage root holding one sub-folder per running pool."""

SUFFIX = ".part"
"""Pool files are temporary files until renamed: the same suffix as other temporary files."""

DEFAULT_BATCH = 64
"""Files made per refill; a refill starts when fewer than half are left."""


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Write ``chunks`` to ``fd`` in one ``writev`` (one system call, no joined copy), finishing
    with plain writes in the rare case that the kernel took only part of it."""
    written = os.writev(fd, chunks) if chunks else 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if written >= len(view):
            written -= len(view)
            continue
        view = view[written:]
        written = 0
        while view:
            view = view[os.write(fd, view) :]


def rename_into(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, creating ``target``'s folder (durably) if it is gone."""
    try:
        os.replace(source, target)
    except FileNotFoundError:
        if not source.exists():
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_dir(target.parent.parent)
        os.replace(source, target)


class FilePool:
    """A supply of empty files with durable names under ``<root>/.pool/``; see the module doc.

    The pool folder and its background thread are created on first use, so a store that only
    reads never makes one. ``close`` removes the unused files and the folder.
    """

    def __init__(self, root: Path, batch: int = DEFAULT_BATCH) -> None:
        self.root = Path(root)
        self.batch = max(2, batch)
        self.folder: Path | None = None
        self._lock_file: Path | None = None
        self._lock_fd: int | None = None
        self._ready: deque[Path] = deque()
        self._guard = threading.Lock()
        self._wanted = threading.Condition(self._guard)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._renamed_into: set[Path] = set()  # folders whose renames a clean close syncs
        self._serial = itertools.count(1)  # next() is atomic: both threads make files

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> Path:
        """Create this pool's folder under an exclusive lock (called with ``_guard`` held)."""
        if self._closed:
            raise RuntimeError("file pool is closed")
        parent = self.root / POOL_FOLDER
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(parent.parent)
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        lock_file = parent / f"{owner}.lock"
        # Locked under another name, then renamed: recovery only ever sees locked lock files
        # (the lock belongs to the inode), and the lock exists before the folder does.
        fd = os.open(f"{lock_file}.new", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(f"{lock_file}.new", lock_file)
        folder = parent / owner
        folder.mkdir()
        fsync_dir(parent)
        self._lock_fd, self._lock_file, self.folder = fd, lock_file, folder
        try:
            self._ready.extend(self._make(folder, self.batch))  # the first batch, then the thread
        finally:  # even on a full disk: the refill retries once there is room
            self._thread = threading.Thread(
                target=self._refill_forever, name="medgate-file-pool", daemon=True
            )
            self._thread.start()
        return folder

    def close(self) -> None:
        """Stop refilling, make every rename durable, and remove the unused files, the folder
        and the lock: after a clean close nothing is left for recovery."""
        with self._guard:
            self._closed = True
            self._wanted.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        with self._guard:
            self._ready.clear()
            for folder in sorted(self._renamed_into):
                with contextlib.suppress(OSError):
                    fsync_dir(folder)
            self._renamed_into.clear()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                if self._lock_file is not None:
                    self._lock_file.unlink(missing_ok=True)
                self.folder = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # ------------------------------------------------------------------ files
    def _make(self, folder: Path, count: int) -> list[Path]:
        """Create ``count`` empty files in ``folder`` and make their names durable."""
        made = []
        for _ in range(count):
            path = folder / f"{next(self._serial):08d}{SUFFIX}"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
            made.append(path)
        fsync_dir(folder)
        return made

    def _refill_forever(self) -> None:
        while True:
            with self._guard:
                while not self._closed and len(self._ready) >= self.batch // 2:
                    self._wanted.wait()
                if self._closed or self.folder is None:
                    return
                folder, wanted = self.folder, self.batch - len(self._ready)
            try:
                made = self._make(folder, wanted)
            except OSError as exc:  # a full disk: ``take`` makes its own and reports it
                log.warning("cannot prepare instance files: %s", exc.strerror)
                with self._guard:
                    self._wanted.wait(timeout=1.0)
                continue
            with self._guard:
                if self._closed:
                    return
                self._ready.extend(made)

    def take(self) -> Path:
        """An empty file whose name is durable; made on the spot when none is ready."""
        with self._guard:
            folder = self.folder or self._open()
            if len(self._ready) < self.batch // 2:
                self._wanted.notify()
            if self._ready:
                return self._ready.popleft()
        return self._make(folder, 1)[0]  # outside the lock: the refill may run meanwhile

    def write(self, target: Path, chunks: Sequence[bytes | memoryview]) -> None:
        """Write ``chunks`` durably and rename the file to ``target`` (see the module doc).

        On any error the taken file is removed and ``target`` is untouched.
        """
        path = self.take()
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                write_all(fd, chunks)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            rename_into(path, target)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._renamed_into.add(target.parent)


def abandoned_pools(root: Path) -> Iterator[Path]:
    """The pool folders under ``root`` whose owner has exited, each locked while the caller
    looks at it and removed (with whatever the caller left in it) afterwards."""
    parent = Path(root) / POOL_FOLDER
    if not parent.is_dir():
        return
    removed = False
    for lock_file in sorted(parent.glob("*.lock")):
        fd = os.open(lock_file, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its owner is running
            folder = lock_file.with_suffix("")
            if folder.is_dir():
                yield folder
                shutil.rmtree(folder, ignore_errors=True)
            lock_file.unlink(missing_ok=True)
            removed = True
        finally:
            os.close(fd)
    if removed:
        fsync_dir(parent)
