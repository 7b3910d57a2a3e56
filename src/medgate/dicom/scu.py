"""Sending files to a peer by C-STORE exactly as they are on disk (``medgate send``).

Files are not decoded: pynetdicom streams each file's data set after its File Meta, in the
transfer syntax the file already has, so what arrives is byte-for-byte what is on disk. One
association carries up to 128 (SOP class, transfer syntax) pairs; more pairs use more
associations, one after the other.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import _config
from pynetdicom.status import code_to_category

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.dicom.net import Peer, associate, association_failure, scu_ae

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128


@dataclass
class SendReport:
    """One entry per file: (path, status code or None, meaning)."""

    results: list[tuple[Path, int | None, str]] = field(default_factory=list)

    def add(self, path: Path, code: int | None, meaning: str) -> None:
        self.results.append((path, code, meaning))

    @property
    def failed(self) -> int:
        return sum(1 for _, _, meaning in self.results if meaning not in ("Success", "Warning"))

    @property
    def succeeded(self) -> list[Path]:
        return [p for p, _, meaning in self.results if meaning in ("Success", "Warning")]

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter(
            ("-" if code is None else f"0x{code:04X}", meaning) for _, code, meaning in self.results
        )


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """The files given plus every file under the folders given (recursive, no hidden files)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
    return files


def store_files(
    settings: Settings,
    peer: Peer,
    files: list[Path],
    *,
    progress: Callable[[], None] | None = None,
) -> SendReport:
    """C-STORE ``files`` to ``peer``; raises ConnectionError if no association comes up."""
    report = SendReport()
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in files:
        try:
            meta = read_file_meta_info(path)
            key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        except Exception:
            report.add(path, None, "not a DICOM Part 10 file")
            if progress:
                progress()
            continue
        groups.setdefault(key, []).append(path)
    pairs = list(groups)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send file bytes as they are, no decode
    try:
        for start in range(0, len(pairs), MAX_CONTEXTS):
            chunk = pairs[start : start + MAX_CONTEXTS]
            ae = scu_ae(settings)
            for sop_class, syntax in chunk:
                ae.add_requested_context(sop_class, syntax)
            assoc = associate(ae, settings, peer)
            if not assoc.is_established:
                raise ConnectionError(f"C-STORE to {peer}: {association_failure(assoc)}")
            try:
                for pair in chunk:
                    for path in groups[pair]:
                        _send_one(assoc, path, report)
                        if progress:
                            progress()
            finally:
                if assoc.is_established:
                    assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return report


def _send_one(assoc: object, path: Path, report: SendReport) -> None:
    if not assoc.is_established:  # type: ignore[attr-defined]
        report.add(path, None, "association lost")
        return
    try:
        status = assoc.send_c_store(path)  # type: ignore[attr-defined]
    except (ValueError, AttributeError) as exc:
        report.add(path, None, f"not sent: {type(exc).__name__}")
        return
    if not status:
        report.add(path, None, "no response")
        return
    code = int(status.Status)
    meaning = code_to_category(code)
    if meaning not in ("Success", "Warning"):
        log.info("C-STORE of %s refused: 0x%04X", phi_hash(path.name), code)
    report.add(path, code, meaning)
