"""The result objects written back to the PACS: pure functions of the findings (highdicom).

``build_result_objects`` turns one study's ``StudyResult`` and its source instances into DICOM
objects a radiologist's viewer shows: a TID 1500 SR, SEGs, overlay secondary captures and a
one-page summary for the primary-care doctor. Everything is built and checked in memory; any
failure raises ``ReportError`` so that the caller queues all of them or none.
"""

from __future__ import annotations

from medgate.reports.builder import ResultKind, ResultObject, build_result_objects
from medgate.reports.errors import ReportError

__all__ = ["ReportError", "ResultKind", "ResultObject", "build_result_objects"]
