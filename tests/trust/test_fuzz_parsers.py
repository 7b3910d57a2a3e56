"""Mutation fuzzing of the parsers medgate runs on untrusted bytes (issue #8).

Each case mutates a real file (bit flips, truncation, absurd lengths, wrong VRs, huge pixel data
claims) or builds a hostile one (deep sequences); the parser must end in a clean exception or a
data set, within a time and memory bound. 500+ cases by default, 10,000+ with ``--long``.
"""

from __future__ import annotations

import io
import random
import struct
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from tests.support.faults import repetitions

from medgate.dicom.header import MalformedDataset, parse_header

CLEAN = (
    InvalidDicomError,
    BytesLengthException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OSError,
    struct.error,
    NotImplementedError,
    AttributeError,
    OverflowError,
    zlib.error,
    LookupError,
)
MAX_SECONDS = 5.0
MAX_PEAK_BYTES = 96 * 1024 * 1024
VRS = [
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FL",
    b"FD",
    b"IS",
    b"LO",
    b"LT",
    b"OB",
    b"OW",
    b"PN",
    b"SH",
    b"SL",
    b"SQ",
    b"SS",
    b"ST",
    b"TM",
    b"UI",
    b"UL",
    b"UN",
    b"US",
    b"UT",
    b"ZZ",
    b"\x00\x00",
]


def seeds(test_files: list[Path]) -> list[bytes]:
    small = [p for p in test_files if p.stat().st_size < 200_000]
    return [p.read_bytes() for p in small[:12]]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del buf[rng.randrange(1, len(buf)) :]
    elif kind == 2:  # absurd length in a 4- or 2-byte length field
        i = rng.randrange(132, max(133, len(buf) - 4))
        absurd = rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 30])
        buf[i : i + 4] = struct.pack("<I", absurd)
    elif kind == 3:  # wrong VRs: overwrite a two-letter VR with another
        positions = [i for i in range(132, len(buf) - 2) if bytes(buf[i : i + 2]) in VRS[:-2]]
        for i in rng.sample(positions, min(len(positions), rng.randint(1, 4))):
            buf[i : i + 2] = rng.choice(VRS)
    elif kind == 4:  # huge pixel data claim: Rows/Columns to 65535, pixel length enormous
        for tag in (b"\x28\x00\x10\x00", b"\x28\x00\x11\x00"):
            i = buf.find(tag)
            if i >= 0 and i + 10 <= len(buf):
                buf[i + 8 : i + 10] = b"\xff\xff"
        i = buf.find(b"\xe0\x7f\x10\x00")
        if i >= 0:
            buf[i + 8 : i + 12] = struct.pack("<I", 0xFFFFFFF0)
    else:  # splice: a random chunk duplicated elsewhere
        a = rng.randrange(len(buf))
        b = min(len(buf), a + rng.randint(1, 256))
        j = rng.randrange(len(buf))
        buf[j:j] = buf[a:b]
    return bytes(buf)


def deep_sequence(depth: int) -> bytes:
    """Explicit VR LE data set: ``depth`` nested undefined-length sequences."""
    body = b""
    for _ in range(depth):
        body = (
            b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"  # ReferencedSeriesSequence, undefined
            + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
            + body
            + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
    return body


def part10(dataset: bytes, syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue() + dataset


def read_like_medgate(data: bytes) -> None:
    """dcmread as the store, sender and worker use it, then touch every value (lazy parsing)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for n, elem in enumerate(ds.iterall()):
        _ = elem.value
        if n > 5000:
            break


def header_of(data: bytes) -> None:
    """The receiver's header reader on the data set part (after the file meta)."""
    try:
        meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    except struct.error:
        meta_end = 132
    parse_header(data[meta_end:], ExplicitVRLittleEndian)  # raises MalformedDataset only


def run_case(
    parser: Callable[[bytes], None], data: bytes, also: tuple[type[BaseException], ...] = ()
) -> str:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        parser(data)
        outcome = "parsed"
    except CLEAN + also as exc:
        outcome = type(exc).__name__
    except RecursionError as exc:
        raise AssertionError("recursion blew up: deep nesting is not bounded") from exc
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"{parser.__name__} took {elapsed:.1f}s"
    assert peak < MAX_PEAK_BYTES, f"{parser.__name__} peaked at {peak / 1e6:.0f} MB"
    return outcome


@pytest.mark.parametrize("parser", [read_like_medgate, header_of], ids=["dcmread", "header"])
def test_mutations_end_cleanly(test_files: list[Path], long_run: bool, parser) -> None:
    rng = random.Random(8)
    corpus = seeds(test_files)
    cases = repetitions(10_000, 500, long_run)
    if parser is header_of and not long_run:
        cases = 200
    outcomes: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(cases):
            outcome = run_case(parser, mutate(rng, rng.choice(corpus)))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if parser is header_of:  # the receiver's reader wraps every failure in MalformedDataset
        assert set(outcomes) <= {"parsed", "MalformedDataset"}, outcomes
    assert sum(outcomes.values()) == cases
    assert len(outcomes) >= 2, outcomes  # the mutations do reach the error paths
    print(f"\nparser fuzz ({parser.__name__}): {cases} cases {outcomes}")


@pytest.mark.parametrize("depth", [50, 400])
def test_deep_sequences(depth: int) -> None:
    data = part10(deep_sequence(depth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the receiver refuses it cleanly, so deep nesting never reaches the store
        assert run_case(header_of, data) in ("parsed", "MalformedDataset")
        # pydicom's own reader recurses per level: a RecursionError, caught like any other
        # error, is what a hostile file read from a folder gives (process survives)
        run_case(read_like_medgate, data, also=(RecursionError,))


def test_deflate_bomb_refused_before_inflating() -> None:
    inflated = 8 * 1024 * 1024
    # one 8 MiB OB element of zeros: walks fast, inflates ~1000:1
    payload = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", inflated) + b"\x00" * inflated
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = squeeze.compress(payload) + squeeze.flush()
    assert len(bomb) < inflated // 500
    with pytest.raises(MalformedDataset, match="inflate"):
        parse_header(bomb, DeflatedExplicitVRLittleEndian)
