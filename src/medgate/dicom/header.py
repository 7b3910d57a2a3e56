"""Read the few attributes the index needs from a received data set, without decoding it all.

The receiver must answer fast and must never store something it cannot read back. This module
parses the encoded data set once with pydicom (values are converted lazily, pixel data is not
decoded), checks that the element stream is complete (a truncated stream parses "fine" in pydicom,
so the last element's length is checked against the bytes present) and that the identifying UIDs
are there. Anything wrong raises ``MalformedDataset`` with the C-STORE status to answer.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from medgate.core.dicom_status import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISSING_UID,
    STATUS_SOP_CLASS_MISMATCH,
    STATUS_UID_MISMATCH,
    StatusError,
)

_UNDEFINED = 0xFFFFFFFF


class MalformedDataset(StatusError, ValueError):
    """The data set cannot be stored; ``status`` is the C-STORE failure status to answer."""

    default_status = STATUS_CANNOT_UNDERSTAND


@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    body_part: str | None
    series_description: str | None
    instance_number: int | None


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:  # a bad value in a descriptive field is not a reason to refuse the image
        return None
    if value is None or value == "":
        return None
    return str(value).strip()[:limit] or None


_SOP_CLASS = Tag(0x0008, 0x0016)
_SOP_INSTANCE = Tag(0x0008, 0x0018)
_STUDY = Tag(0x0020, 0x000D)
_SERIES = Tag(0x0020, 0x000E)
_MODALITY = Tag(0x0008, 0x0060)
_BODY_PART = Tag(0x0018, 0x0015)
_INSTANCE_NUMBER = Tag(0x0020, 0x0013)


def _ascii(ds: Dataset, tag: BaseTag, limit: int = 64) -> str:
    """The raw value of an ASCII-only VR (UI, CS, IS), stripped; '' when absent or skipped.

    Read straight from the raw element: pydicom's value conversion of eight attributes cost
    more than parsing the whole header, and these VRs have no character set to apply.
    """
    elem = ds._dict.get(tag)
    value = elem.value if isinstance(elem, RawDataElement) else None
    if not value:
        return ""
    return value[: limit * 2].decode("ascii", "replace").strip("\x00 ")[:limit]


def _int(ds: Dataset, tag: BaseTag) -> int | None:
    try:
        return int(_ascii(ds, tag, 12))
    except ValueError:
        return None


DEFER_SIZE = 1024
"""Values longer than this (pixel data, big private blobs) are skipped, not copied: the index
needs only short attributes, and copying 512 KiB of pixels cost more than parsing the rest."""


def _check_complete(ds: Dataset, total: int) -> None:
    """Every top-level element must have all its bytes: pydicom silently reads short values
    and seeks past skipped (deferred) ones without looking."""
    last_end = 0
    for elem in ds._dict.values():
        if not isinstance(elem, RawDataElement):
            continue
        if elem.value is None and elem.length not in (0, _UNDEFINED):  # deferred: skipped
            last_end = max(last_end, elem.value_tell + elem.length)
            continue
        value = elem.value or b""
        if elem.length != _UNDEFINED and len(value) != elem.length:
            raise MalformedDataset(
                f"data set truncated: element {elem.tag} has {len(value)} of {elem.length} bytes"
            )
        last_end = max(last_end, elem.value_tell + len(value))
    if last_end > total:
        raise MalformedDataset("data set truncated")


# Deflate bombs: real deflated data sets shrink a few times (images 2-4:1); a 1000:1 stream of
# zeros is an attack that would tie the receiver up walking millions of empty elements.
MAX_INFLATE_RATIO = 200
MAX_INFLATED_BYTES = 256 * 1024 * 1024


def _inflate_bounded(encoded: bytes) -> bytes:
    """Inflate a deflated data set, refusing before the output outgrows its bound."""
    limit = min(MAX_INFLATED_BYTES, max(1024 * 1024, MAX_INFLATE_RATIO * len(encoded)))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(encoded, limit)
    except zlib.error as exc:
        raise MalformedDataset(f"deflated data set does not inflate: {exc}") from exc
    if inflater.unconsumed_tail:
        raise MalformedDataset(
            f"deflated data set would inflate beyond {limit} bytes "
            f"(more than {MAX_INFLATE_RATIO}:1): refused as a deflate bomb",
            STATUS_CANNOT_UNDERSTAND,
        )
    return data


def parse_header(
    encoded: bytes | memoryview,
    transfer_syntax: str,
    *,
    expected_sop_class: str | None = None,
    expected_sop_instance: str | None = None,
) -> InstanceHeader:
    """Parse ``encoded`` (a data set in ``transfer_syntax``, no file meta) into its header.

    ``expected_*`` are the C-STORE request's Affected SOP Class/Instance UIDs: the data set must
    agree with the request that carried it.
    """
    data = encoded
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data = _inflate_bounded(bytes(encoded))
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    if not data:
        raise MalformedDataset("empty data set")
    try:
        ds = read_dataset(BytesIO(data), implicit, little, defer_size=DEFER_SIZE)
        _check_complete(ds, len(data))
        sop_class = _ascii(ds, _SOP_CLASS)
        sop_instance = _ascii(ds, _SOP_INSTANCE)
        study = _ascii(ds, _STUDY)
        series = _ascii(ds, _SERIES)
    except MalformedDataset:
        raise
    except Exception as exc:  # pydicom raises many types for bad streams
        raise MalformedDataset(f"data set cannot be parsed: {type(exc).__name__}") from exc
    missing = [
        name
        for name, value in (
            ("SOPClassUID", sop_class),
            ("SOPInstanceUID", sop_instance),
            ("StudyInstanceUID", study),
            ("SeriesInstanceUID", series),
        )
        if not value
    ]
    if missing:
        raise MalformedDataset(f"data set lacks {', '.join(missing)}", STATUS_MISSING_UID)
    if expected_sop_instance and str(sop_instance) != expected_sop_instance.rstrip("\x00 "):
        raise MalformedDataset(
            "SOP Instance UID in the data set differs from the C-STORE request", STATUS_UID_MISMATCH
        )
    if expected_sop_class and str(sop_class) != expected_sop_class.rstrip("\x00 "):
        raise MalformedDataset(
            "SOP Class UID in the data set differs from the C-STORE request",
            STATUS_SOP_CLASS_MISMATCH,
        )
    return InstanceHeader(
        sop_class_uid=str(sop_class),
        sop_instance_uid=str(sop_instance),
        study_instance_uid=str(study),
        series_instance_uid=str(series),
        modality=_ascii(ds, _MODALITY, 16) or None,
        body_part=_ascii(ds, _BODY_PART, 64) or None,
        series_description=_text(ds, "SeriesDescription", 128),
        instance_number=_int(ds, _INSTANCE_NUMBER),
    )
