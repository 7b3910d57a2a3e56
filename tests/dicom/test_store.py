"""The instance store's write path: atomic files, duplicates, a failed index commit."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medgate.core.config import Settings
from medgate.store.db import Index
from medgate.store.files import InstanceStore, StoreError, atomic_write
from medgate.store.instances import InstanceRecord

UID = "1.2.826.0.1.3680043.8.498.1"
STUDY = "1.2.826.0.1.3680043.8.498.2"


def _record(uid: str = UID) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=uid,
        study_instance_uid=STUDY,
        series_instance_uid=STUDY + ".1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=0,
        sha256="",
        path="",
    )


@pytest.fixture
def instance_store(settings_factory: Callable[..., Settings]) -> Iterator[InstanceStore]:
    settings = settings_factory()
    Path(settings.storage.path).mkdir(parents=True)
    index = Index(settings.storage.resolved_database_url())
    store = InstanceStore(settings, index)
    yield store
    store.close()
    index.close()


@pytest.mark.parametrize(
    "size",
    [0, 100, 64 * 1024 - 1, 64 * 1024, 4096 * 130, 524_288 + 367, 2 * 1024 * 1024, 5_000_001],
)
def test_atomic_write_gives_the_exact_bytes_at_every_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    target = tmp_path / "shard" / "x.dcm"
    atomic_write(target, (data[:300], data[300:]))  # preamble+meta, data set
    assert target.read_bytes() == data
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]  # no temporary file left


def test_a_removed_shard_folder_is_created_again(tmp_path: Path) -> None:
    target = tmp_path / "shard" / "x.dcm"
    atomic_write(target, (b"one",))
    target.unlink()
    target.parent.rmdir()
    atomic_write(target, (b"two",))
    assert target.read_bytes() == b"two"


def _store_while_failing(
    instance_store: InstanceStore,
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    error: OSError,
) -> None:
    """Store one instance while ``owner.name`` raises ``error``: the peer hears 0xA701 and no
    index row is left; then the failure is lifted."""

    def broken(*args: object) -> None:
        raise error

    monkeypatch.setattr(owner, name, broken)
    with pytest.raises(StoreError) as failed:
        instance_store.store(_record(), (b"meta", os.urandom(200_000)))
    assert failed.value.status == 0xA701
    assert instance_store.index.instances.get(UID) is None
    monkeypatch.undo()


def test_a_failed_index_commit_answers_a_failure_status(
    instance_store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_error = OSError(errno.EIO, "disk I/O error")
    _store_while_failing(
        instance_store, monkeypatch, instance_store.index.instances, "add", disk_error
    )
    # the peer sends again: the orphan file is rewritten and indexed
    result = instance_store.store(_record(), (b"meta", b"y" * 200_000))
    assert result.stored and result.path.read_bytes() == b"meta" + b"y" * 200_000
    row = instance_store.index.instances.get(UID)
    assert row is not None and row.sha256 == result.sha256
    # and once more: an identical duplicate, nothing rewritten
    again = instance_store.store(_record(), (b"meta", b"y" * 200_000))
    assert again.duplicate == "identical" and not again.stored


def _files(store: InstanceStore) -> list[str]:
    return sorted(p.name for p in store.instances_dir.rglob("*") if p.is_file())


def test_a_failed_file_write_leaves_no_row(
    instance_store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index row is committed while the file is written: a file that cannot be written
    (here a full disk at fdatasync) must take its row away again."""
    full_disk = OSError(errno.ENOSPC, "No space left on device")
    _store_while_failing(instance_store, monkeypatch, os, "fdatasync", full_disk)
    assert _files(instance_store) == []
    assert instance_store.store(_record(), (b"meta", b"w" * 10)).stored


# ---------------------------------------------------------------- power loss after an ack
def _instance_bytes(uid: str) -> bytes:
    """A Part 10 file as the receiver writes it: preamble + File Meta + a data set."""
    from medgate.dicom.receiver import file_meta_prefix

    prefix = file_meta_prefix("1.2.840.10008.5.1.4.1.1.2", uid, "1.2.840.10008.1.2.1")
    return prefix + os.urandom(20_000)


def _crashed_pool(root: Path, files: dict[str, bytes]) -> Path:
    """What a power loss leaves of a pool: its folder and an unlocked lock file (a lock dies
    with its process), files in it that were never renamed."""
    folder = root / ".pool" / "4242-deadbeef"
    folder.mkdir(parents=True)
    (root / ".pool" / "4242-deadbeef.lock").touch()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _index_as_acknowledged(store: InstanceStore, uid: str, data: bytes) -> Path:
    import hashlib
    from dataclasses import replace

    path = store.path_for(uid)
    sha = hashlib.sha256(data).hexdigest()
    store.index.instances.add(replace(_record(uid), size=len(data), sha256=sha, path=str(path)))
    return path


def test_recovery_renames_acknowledged_files_a_power_loss_left_in_the_pool(
    instance_store: InstanceStore,
) -> None:
    """An ack means: file data durable (in a pool file whose name was durable) and row durable.
    The rename may not have reached the disk; recovery finishes it from the row."""
    acked, cut, unacked = UID + "1", UID + "2", UID + "3"
    data = {uid: _instance_bytes(uid) for uid in (acked, cut, unacked)}
    folder = _crashed_pool(
        instance_store.root,
        {
            "00000001.part": data[acked],  # complete, its row committed: acknowledged
            "00000002.part": data[cut][:5000],  # cut short while being written, row committed
            "00000003.part": data[unacked],  # complete, but its row never committed
            "00000004.part": b"",  # prepared, never used
            "00000005.part": b"\x00" * 128 + b"DICM" + b"garbage",  # no readable File Meta
        },
    )
    acked_path = _index_as_acknowledged(instance_store, acked, data[acked])
    cut_path = _index_as_acknowledged(instance_store, cut, data[cut])
    instance_store.recover()
    assert acked_path.read_bytes() == data[acked]
    assert instance_store.restored_files == 1
    assert not cut_path.exists() and instance_store.index.instances.get(cut) is None
    assert instance_store.dropped_rows == 1
    assert not instance_store.path_for(unacked).exists()
    assert instance_store.index.instances.get(unacked) is None
    assert not folder.exists() and list((instance_store.root / ".pool").iterdir()) == []
    # the peer that never heard success sends again: stored once, as usual
    again = instance_store.store(_record(cut), (data[cut][:300], data[cut][300:]))
    assert again.stored and cut_path.read_bytes() == data[cut]


def test_recovery_leaves_a_newer_copy_in_place_for_an_old_row(
    instance_store: InstanceStore,
) -> None:
    """A pool file that does not match its row (the row says other bytes) is not acknowledged
    and must not replace what is stored under that name."""
    data = _instance_bytes(UID)
    stored = instance_store.store(_record(UID), (data[:300], data[300:]))
    _crashed_pool(instance_store.root, {"00000001.part": data[:300] + b"other" * 4000})
    instance_store.recover()
    assert stored.path.read_bytes() == data
    assert instance_store.restored_files == 0
