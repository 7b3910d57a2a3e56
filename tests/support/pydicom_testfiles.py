"""pydicom's bundled test files, sorted into valid storage objects and deliberately broken ones.

A file counts as a valid storage object when pydicom reads all of it, its SOP class is a storage
SOP class, its File Meta names a transfer syntax, and its UIDs (SOP Instance, Study, Series) are
present and agree with the File Meta. The rest (files without meta, DICOMDIRs, bad UIDs ...) are
what the malformed tests send.

Only the files installed with pydicom are used: ``pydicom.data.get_testdata_files`` would also
try to download pydicom's online test files, and nothing is downloaded at run time.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import pydicom
from pydicom.data.data_manager import DATA_ROOT
from pynetdicom import AllStoragePresentationContexts

STORAGE_CLASSES = {c.abstract_syntax for c in AllStoragePresentationContexts}


def _problem(path: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            for elem in ds:  # force every value to be read and converted
                _ = elem.value
    except Exception as exc:
        return f"unreadable: {type(exc).__name__}"
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return "no file meta / transfer syntax"
    if str(ds.get("SOPClassUID", "")) not in STORAGE_CLASSES:
        return "not a storage SOP class"
    if not all(ds.get(k) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")):
        return "missing UID"
    if str(meta.get("MediaStorageSOPInstanceUID", "")) != str(ds.SOPInstanceUID):
        return "File Meta and data set disagree on the SOP Instance UID"
    if str(meta.get("MediaStorageSOPClassUID", "")) != str(ds.SOPClassUID):
        return "File Meta and data set disagree on the SOP Class UID"
    if "PixelData" in ds and not meta.TransferSyntaxUID.is_compressed:
        from pydicom.pixels.utils import get_expected_length

        if len(ds.PixelData) < get_expected_length(ds, unit="bytes"):
            return "pixel data truncated"
    return None


@cache
def classified() -> tuple[tuple[Path, ...], tuple[tuple[Path, str], ...]]:
    """(valid storage objects, (invalid file, why) pairs), stable order."""
    valid: list[Path] = []
    invalid: list[tuple[Path, str]] = []
    for path in sorted((Path(DATA_ROOT) / "test_files").glob("**/*")):
        name = str(path)
        if not path.is_file() or name.endswith((".json", ".txt", ".py")) or "README" in name:
            continue
        problem = _problem(name)
        if problem is None:
            valid.append(Path(name))
        else:
            invalid.append((Path(name), problem))
    return tuple(valid), tuple(invalid)


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta (the data set as sent on the wire)."""
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    data = path.read_bytes()
    # preamble (128) + "DICM" (4) + group length element (12 bytes) + the group's length
    return data[132 + 12 + int(meta.FileMetaInformationGroupLength) :]
