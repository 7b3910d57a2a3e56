"""C-STORE statuses and the error a DICOM service answers with one instead of crashing.

Why one base: the receiver turns both a data set it cannot understand (``dicom.header``) and a
store that could not write it (``store.files``) into a C-STORE failure response the same way,
status from the error and its message as the Error Comment, so it catches this one type.
"""

from __future__ import annotations

# C-STORE statuses (PS3.4 B.2.3: 0xC000-0xCFFF "cannot understand", 0xA900 data set does not
# match SOP class; PS3.7 C: 0xA700 out of resources, 0xA701 a local storage error).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_STORAGE_ERROR = 0xA701
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_MISSING_UID = 0xC001
STATUS_UID_MISMATCH = 0xC002


class StatusError(Exception):
    """An error that carries the DICOM status to answer with (PS3.4 Annex B, PS3.7 Annex C)."""

    default_status = STATUS_CANNOT_UNDERSTAND  # a subclass names its own default

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status
