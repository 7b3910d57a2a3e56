"""C-STORE and HTTP fuzzing of the running services (issue #8, "proof under bad input").

DICOM: mutated data sets (bit flips, truncations, absurd element lengths, wrong VRs, deeply
nested sequences, deflate bombs, huge pixel data claims, garbage) are sent byte-for-byte by a
pynetdicom SCU, many per association, to a real ``medgate receive`` child process. The receiver
must answer every case with a status, store a case intact when it happens to be valid and not
at all when refused, keep its memory bounded (psutil RSS), and still answer C-ECHO and a valid
C-STORE afterwards. HTTP: schemathesis generates requests from the app's own OpenAPI schema;
none may produce a 5xx.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)
from tests.support.faults import (
    BackgroundSend,
    ReceiverProcess,
    dataset_bytes,
    dataset_offset,
    echo_ok,
    receiver_config,
    repetitions,
    rss_mb,
)

from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.store.db import Index

RSS_GROWTH_LIMIT_MB = 300.0
VRS = [b"SQ", b"OB", b"UN", b"US", b"UL", b"XX", b"\x00\x00", b"UT", b"OW", b"FD", b"AT"]


def _part10(body: bytes, syntax: str, sop_uid: str, sop_class: str = CTImageStorage) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    buffer.write(body)
    return buffer.getvalue()


def _elements(body: bytes) -> list[tuple[int, int]]:
    """(offset, header length) of the top-level elements of an explicit VR LE data set."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos + 8 <= len(body):
        vr = body[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            (length,) = struct.unpack("<I", body[pos + 8 : pos + 12])
            header = 12
        else:
            (length,) = struct.unpack("<H", body[pos + 6 : pos + 8])
            header = 8
        out.append((pos, header))
        if length == 0xFFFFFFFF:
            break
        pos += header + length
    return out


def _nested(depth: int) -> bytes:
    """A ContentSequence nested ``depth`` deep, undefined lengths throughout."""
    open_ = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return open_ * depth + close * depth


def _deflate_bomb(megabytes: int) -> bytes:
    """A deflated data set whose one OB element inflates to ``megabytes`` MiB of zeros."""
    header = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", megabytes << 20)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [squeeze.compress(header)]
    zeros = bytes(1 << 20)
    for _ in range(megabytes):
        parts.append(squeeze.compress(zeros))
    parts.append(squeeze.flush())
    return b"".join(parts)


class Mutator:
    """Makes one bad (or, by chance, still valid) case from a fresh valid data set."""

    def __init__(self, base: Path, seed: int) -> None:
        self.template = pydicom.dcmread(base)
        self.rng = random.Random(seed)
        self.bombs = [_deflate_bomb(mb) for mb in (64, 300)]

    def _fresh(self, **changes: object) -> tuple[bytes, str]:
        ds = self.template.copy()
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        return data[dataset_offset(data) :], uid

    def case(self) -> tuple[str, bytes]:
        rng = self.rng
        kind = rng.choice(
            [
                "valid",
                "bitflip",
                "bitflip",
                "truncate",
                "length",
                "length",
                "vr",
                "nested",
                "deflate",
                "pixels",
                "garbage",
                "splice",
            ]
        )
        syntax = ExplicitVRLittleEndian
        if kind == "pixels":
            body, uid = self._fresh(
                Rows=65535,
                Columns=65535,
                NumberOfFrames=99999,
                SamplesPerPixel=3,
                BitsAllocated=16,
                PhotometricInterpretation="RGB",
                PlanarConfiguration=0,
            )
        else:
            body, uid = self._fresh()
        data = bytearray(body)
        elements = _elements(body)
        if kind == "bitflip":
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del data[rng.randrange(len(data)) :]
        elif kind == "length":
            offset, header = rng.choice(elements)
            value = rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE, 1 << 30, 3, 0xFFFFFFFF])
            if header == 12:
                data[offset + 8 : offset + 12] = struct.pack("<I", value)
            else:
                data[offset + 6 : offset + 8] = struct.pack("<H", value & 0xFFFF)
        elif kind == "vr":
            offset, _ = rng.choice(elements)
            data[offset + 4 : offset + 6] = rng.choice(VRS)
        elif kind == "nested":
            data += _nested(rng.choice([50, 500, 5000, 20000]))
        elif kind == "deflate":
            syntax = DeflatedExplicitVRLittleEndian
            data = bytearray(rng.choice(self.bombs))
        elif kind == "garbage":
            data = bytearray(rng.randbytes(rng.randint(0, 4096)))
        elif kind == "splice":
            cut = rng.randrange(len(data))
            data[cut:cut] = rng.randbytes(rng.randint(1, 64))
        return kind, _part10(bytes(data), syntax, uid)


def _send_all(port: int, files: list[Path]) -> dict[Path, int | None]:
    """Send every file (many per association); files whose association was lost go again once."""
    statuses = BackgroundSend(port, files).start().join().statuses()
    lost = [p for p, code in statuses.items() if code is None]
    if lost:
        statuses.update(BackgroundSend(port, lost).start().join().statuses())
    return statuses


def test_cstore_fuzz_receiver_survives(tmp_path: Path, long_run: bool) -> None:
    cases = repetitions(10_000, 520, long_run)
    batch = 520
    port = free_port()
    # One receiving process: its memory and liveness are what this test watches (with several,
    # the parent only supervises and a crashed child would be replaced unseen).
    config = receiver_config(tmp_path, port, processes=1)
    receiver = ReceiverProcess(config, port, tmp_path / "receive.log")
    base = ct_series(tmp_path / "base", 1, rows=32, columns=32, seed=3)[0]
    mutator = Mutator(base, seed=88)
    receiver.start()
    index = Index(f"sqlite:///{tmp_path / 'store' / 'index.sqlite'}", create=False)
    kinds: dict[str, int] = {}
    outcome: dict[str, int] = {"success": 0, "refused": 0}
    accepted_bodies: set[str] = set()
    try:
        baseline = rss_mb(receiver.pid)
        peak = baseline
        done = 0
        while done < cases:
            folder = tmp_path / f"cases{done}"
            folder.mkdir()
            files = []
            for n in range(min(batch, cases - done)):
                kind, data = mutator.case()
                kinds[kind] = kinds.get(kind, 0) + 1
                path = folder / f"{n:05d}-{kind}.dcm"
                path.write_bytes(data)
                files.append(path)
            statuses = _send_all(port, files)
            assert receiver.alive(), receiver.log.read_text(errors="replace")[-3000:]
            peak = max(peak, rss_mb(receiver.pid))
            for path in files:
                code = statuses[path]
                assert code is not None, f"no status for {path.name}"
                if code == 0:
                    outcome["success"] += 1
                    accepted_bodies.add(hashlib.sha256(dataset_bytes(path)).hexdigest())
                else:
                    outcome["refused"] += 1
                    assert 0xA000 <= code <= 0xCFFF, hex(code)
            assert echo_ok(port), "no C-ECHO answer after a fuzz batch"
            done += len(files)
            for path in files:  # keep the tmp folder small in the long form
                path.unlink()

        # every accepted case is stored intact, nothing refused was stored
        stored: set[str] = set()
        rows = 0
        instances = tmp_path / "store" / "instances"
        assert not list(instances.rglob("*.part")), "half-written files left"
        for path in instances.rglob("*.dcm"):
            data = path.read_bytes()
            stored.add(hashlib.sha256(data[dataset_offset(data) :]).hexdigest())
            row = index.instances.get(path.stem)
            assert row is not None and row.sha256 == hashlib.sha256(data).hexdigest()
            rows += 1
        assert stored == accepted_bodies
        assert rows == index.instances.count()

        # still alive and well: C-ECHO and a valid C-STORE stored byte-for-byte
        valid = ct_series(tmp_path / "after", 1, rows=32, columns=32, seed=4)[0]
        assert _send_all(port, [valid])[valid] == 0
        row = index.instances.get(pydicom.dcmread(valid).SOPInstanceUID)
        assert row is not None
        stored_bytes = Path(row.path).read_bytes()
        assert stored_bytes[dataset_offset(stored_bytes) :] == dataset_bytes(valid)
        growth = peak - baseline
        print(
            f"\nC-STORE fuzz: {cases} cases {kinds}; {outcome}; RSS {baseline:.0f} MB -> peak "
            f"{peak:.0f} MB"
        )
        assert growth < RSS_GROWTH_LIMIT_MB, f"receiver RSS grew by {growth:.0f} MB"
        assert outcome["refused"] > cases // 3  # the cases really were bad, mostly
        assert outcome["success"] + outcome["refused"] == cases
        assert receiver.stop() == 0
    finally:
        receiver.kill9()
        index.close()


# ------------------------------------------------------------------ HTTP


def test_http_api_schema_fuzz_no_server_errors(settings_factory, long_run: bool) -> None:
    """schemathesis against the app's own OpenAPI schema: no request gives a server error (5xx;
    the one exception is the documented 503 of model inference without a model client)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hsettings

    from medgate.api.app import create_app

    settings = settings_factory(api={"tokens": {"fuzz-token": ["cds", "results", "admin"]}})
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    index = Index(settings.storage.resolved_database_url())
    app = create_app(settings, index)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    examples = repetitions(60, 8, long_run)
    server_errors: list[str] = []
    calls = 0
    for operation in schema.get_all_operations():
        op = operation.ok()

        @hsettings(
            max_examples=examples,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=op.as_strategy())
        def run(case: object) -> None:
            nonlocal calls
            headers = {"Authorization": "Bearer fuzz-token"} if calls % 4 else {}
            response = case.call(headers=headers)  # type: ignore[attr-defined]
            calls += 1
            # 503 from .../infer is the documented answer when no model client is configured
            # (this app is the API alone); every other 5xx is a server error.
            path = case.operation.path  # type: ignore[attr-defined]
            documented = response.status_code == 503 and path.endswith("/infer")
            if response.status_code >= 500 and not documented:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}"  # type: ignore[attr-defined]
                )

        run()
    index.close()
    print(f"\nHTTP fuzz: {calls} requests over {len(list(schema.get_all_operations()))} operations")
    assert calls > 0
    assert not server_errors, server_errors[:10]
