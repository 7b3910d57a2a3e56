"""The instance store: each received data set as a Part 10 file, durable before it is indexed.

Why this shape:

* The data set bytes are written exactly as the modality sent them (no decode/re-encode), so the
  stored file is bit-for-bit the sender's data set plus a File Meta header built from the
  presentation context. Nothing a viewer or an auditor relies on is changed in transit.
* A file appears under its final name only when complete. Instance files are written into an
  empty file from a ``FilePool`` (made ahead of time, its name already durable),
  ``fdatasync``-ed and renamed into place; the index row (with the file's size and sha256)
  commits *in parallel*, because on one association every millisecond before the response is a
  millisecond of throughput. The receiver answers C-STORE success only after both are durable.
  The rename becomes durable with the next journal commit; should power fail before, the
  complete file is still in the pool folder and ``recover()`` renames it into place because it
  matches its row (see ``medgate.store.filepool``). Result objects use the classic
  ``atomic_write`` (temporary file, fsync, rename, folder fsync).
* A crash can therefore leave: nothing; a temporary or pool file (renamed into place if it is a
  complete, acknowledged instance, removed otherwise); a complete file without a row, or a row
  without its file. The peer never got success for the last three, so it sends again: a re-sent
  instance whose file is missing is written and re-indexed. In case it never does, ``recover()``
  (run by the DICOM service before its receiver starts) removes temporary files and drops rows
  of the most recent instances whose file is missing: a crash can only hit instances that were
  in flight, i.e. the newest.
* Files live under ``instances/<2-digit shard>/<SOPInstanceUID>.dcm`` so no folder grows huge;
  the hundred shard folders are made (durably) when the store opens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID

from medgate.core.checksums import sha256_file
from medgate.core.config import Settings
from medgate.core.dicom_status import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_STORAGE_ERROR,
    STATUS_SUCCESS,
    StatusError,
)
from medgate.core.logs import phi_hash
from medgate.store.db import Index
from medgate.store.filepool import FilePool, abandoned_pools, fsync_dir, rename_into
from medgate.store.instances import InstanceRecord

log = logging.getLogger(__name__)

TMP_SUFFIX = ".part"


class StoreError(StatusError, RuntimeError):
    """Writing or indexing failed; ``status`` is the DICOM status to answer with."""

    default_status = STATUS_STORAGE_ERROR


@dataclass(frozen=True)
class StoreResult:
    """What happened to one instance."""

    status: int
    path: Path
    sha256: str
    size: int
    stored: bool  # False: an identical (or, without overwrite, a differing) copy already existed
    duplicate: str | None = None  # None, "identical" or "different"


def atomic_write(path: Path, chunks: list[bytes] | tuple[bytes, ...]) -> None:
    """Write ``chunks`` to ``path`` so that it exists complete or not at all, durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _safe_uid(uid: str) -> str:
    """A UID usable as a file name; anything else is refused (no path tricks through a UID)."""
    uid = uid.strip().rstrip("\x00")
    if not uid or len(uid) > 64 or not all(c.isdigit() or c == "." for c in uid):
        raise StoreError(f"not a valid UID for a file name: {phi_hash(uid)}", 0xC001)
    return uid


class InstanceStore:
    """Durable, de-duplicated storage of received instances and of medgate's result objects."""

    def __init__(self, settings: Settings, index: Index) -> None:
        self.settings = settings
        self.index = index
        self.root = Path(settings.storage.path)
        self.instances_dir = self.root / "instances"
        self.results_dir = self.root / "results"
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._make_shards()
        self.pool = FilePool(self.root)
        self.min_free_bytes = settings.storage.min_free_mb * 1024 * 1024
        self.overwrite_duplicates = settings.dicom.overwrite_duplicates
        # Striped per-UID locks: two associations storing the same UID at once must not race.
        self._uid_locks = [threading.Lock() for _ in range(64)]
        # Writes files while the caller commits the index row (both mostly wait on fsync).
        self._writer = ThreadPoolExecutor(
            max_workers=max(2, settings.dicom.max_associations), thread_name_prefix="medgate-write"
        )
        self.removed_partials = 0
        self.restored_files = 0
        self.dropped_rows = 0

    # ------------------------------------------------------------------ paths and housekeeping
    def _make_shards(self) -> None:
        """Create the hundred shard folders once, durably, so a rename into one never waits
        on a folder creation."""
        missing = [
            folder
            for folder in (self.instances_dir / f"{n:02d}" for n in range(100))
            if not folder.is_dir()
        ]
        for folder in missing:
            folder.mkdir(exist_ok=True)
        if missing:
            fsync_dir(self.instances_dir)

    def path_for(self, sop_instance_uid: str) -> Path:
        uid = _safe_uid(sop_instance_uid)
        shard = uid.replace(".", "")[-2:].rjust(2, "0")
        return self.instances_dir / shard / f"{uid}.dcm"

    def remove_partials(self) -> int:
        """Delete temporary files a crash left behind (they were never acknowledged)."""
        removed = 0
        for folder in (self.instances_dir, self.results_dir):
            for tmp in folder.rglob(f"*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d partial file(s) left by an interrupted write", removed)
        return removed

    def recover(self) -> None:
        """Clean up after a crash; only while no receiver writes into this store."""
        self.restored_files = self.restore_pool_files()
        self.removed_partials = self.remove_partials()
        self.dropped_rows = self.reconcile()

    def restore_pool_files(self) -> int:
        """Rename the complete, acknowledged files a crash left in pool folders into place.

        A pool file is an acknowledged instance when the index row of the SOP Instance UID in
        its File Meta has the file's size and sha256; the row's path is where it belongs. Every
        other file in a pool folder was never acknowledged and is removed with the folder.
        """
        restored = 0
        for folder in abandoned_pools(self.root):
            for path in sorted(folder.iterdir()):
                target = self._acknowledged_target(path)
                if target is not None:
                    rename_into(path, target)
                    fsync_dir(target.parent)
                    restored += 1
        if restored:
            log.warning("restored %d acknowledged instance file(s) left unrenamed", restored)
        return restored

    def _acknowledged_target(self, path: Path) -> Path | None:
        """Where pool file ``path`` belongs, if it is exactly the instance its row describes."""
        from pydicom.filereader import read_file_meta_info

        size = path.stat().st_size
        if size == 0:
            return None
        try:
            uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        except Exception:  # not even a File Meta: a write cut short
            return None
        row = self.index.instances.get(uid)
        if row is None or row.size != size:
            return None
        if sha256_file(path) != row.sha256:
            return None
        return Path(row.path)

    def reconcile(self, recent: int | None = None) -> int:
        """Drop index rows of recent instances whose file is missing (crash mid-store)."""
        limit = recent or 4 * self.settings.dicom.max_associations
        dropped = 0
        for row in self.index.instances.latest(limit):
            if not Path(row.path).exists() and self.index.instances.delete(row.sop_instance_uid):
                dropped += 1
        if dropped:
            log.warning("dropped %d index row(s) whose file a crash did not finish", dropped)
        return dropped

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.pool.close()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def has_room(self, incoming: int = 0) -> bool:
        return self.free_bytes() - incoming >= self.min_free_bytes

    def _lock_for(self, uid: str) -> threading.Lock:
        return self._uid_locks[hash(uid) % len(self._uid_locks)]

    # ------------------------------------------------------------------ instances
    def store(self, record: InstanceRecord, chunks: list[bytes] | tuple[bytes, ...]) -> StoreResult:
        """Write one instance file from ``chunks`` (preamble+meta, data set) and index it.

        ``record`` carries the UIDs and descriptive fields; its size, sha256 and path are filled
        in here. Raises ``StoreError`` (with the DICOM status to answer) when it cannot be stored.
        """
        size = sum(len(c) for c in chunks)
        if not self.has_room(size):
            raise StoreError(
                f"free disk below storage.min_free_mb={self.settings.storage.min_free_mb}",
                STATUS_OUT_OF_RESOURCES,
            )
        path = self.path_for(record.sop_instance_uid)
        with self._lock_for(record.sop_instance_uid):
            # Common case first: no file under this UID means a new instance (one stat call, no
            # extra query), and its file write starts at once, in parallel with the hash and the
            # index commit. A row without its file (crash between the two) is re-indexed.
            fresh = not path.exists()
            writing = self._writer.submit(self.pool.write, path, chunks) if fresh else None
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
            sha = digest.hexdigest()
            full = replace(record, size=size, sha256=sha, path=str(path))
            existing = None if fresh else self.index.instances.get(record.sop_instance_uid)
            if existing is not None:
                if existing.sha256 == sha:
                    return StoreResult(STATUS_SUCCESS, path, sha, size, False, "identical")
                if not self.overwrite_duplicates:
                    log.warning(
                        "instance %s received again with different bytes: kept sha256 %s, "
                        "ignored sha256 %s",
                        phi_hash(record.sop_instance_uid),
                        existing.sha256,
                        sha,
                    )
                    return StoreResult(
                        STATUS_SUCCESS,
                        path,
                        existing.sha256,
                        existing.size,
                        False,
                        "different",
                    )
            if writing is None:
                writing = self._writer.submit(self.pool.write, path, chunks)
            index_error: Exception | None = None
            try:
                if existing is not None or not self.index.instances.add(full):
                    # Overwrite allowed, or a row whose file had gone missing: index this copy.
                    self.index.instances.replace(full)
            except Exception as exc:  # the file becomes an orphan; the peer re-sends
                index_error = exc
            try:
                writing.result()
            except OSError as exc:
                if index_error is None and existing is None:
                    self.index.instances.delete(record.sop_instance_uid)  # no row without file
                raise StoreError(f"cannot write instance file: {exc.strerror}") from exc
            if index_error is not None:
                raise StoreError(
                    f"cannot index instance: {type(index_error).__name__}"
                ) from index_error
        duplicate = None if existing is None else "different"
        return StoreResult(STATUS_SUCCESS, path, sha, size, True, duplicate)

    # ------------------------------------------------------------------ results
    def write_result(self, ds: Dataset) -> Path:
        """Write a result object (SR, SEG ...) to ``results/<SOPInstanceUID>.dcm``, atomically.

        The file is a Part 10 file with the data set's own file meta (created if absent).
        """
        from io import BytesIO

        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        uid = _safe_uid(str(ds.SOPInstanceUID))
        if not getattr(ds, "file_meta", None):
            ds.file_meta = FileMetaDataset()
        meta = ds.file_meta
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = self.results_dir / f"{uid}.dcm"
        atomic_write(path, (buffer.getvalue(),))
        return path
