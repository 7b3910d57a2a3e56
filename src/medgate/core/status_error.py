"""The error a DICOM service answers with a failure status instead of a crash.

Why one base: the receiver turns both a data set it cannot understand (``dicom.header``) and a
store that could not write it (``store.files``) into a C-STORE failure response the same way,
status from the error and its message as the Error Comment, so it catches this one type.
"""

from __future__ import annotations


class StatusError(Exception):
    """An error that carries the DICOM status to answer with (PS3.4 Annex B, PS3.7 Annex C)."""

    default_status = 0xC000  # "cannot understand": a subclass names its own default

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status
