"""The foundation's durability tests with the index, job queue and outbox on PostgreSQL.

The outbox tests (delivery, PACS down then up, dead letter) and two C-STORE tests are
tests/support/durability_cases.py's, collected by tests/dicom on SQLite and here again: this
folder's ``service_factory`` puts ``storage.database_url`` on a fresh PostgreSQL database.
The kill -9 test runs on both databases in tests/dicom/test_crash.py.
"""

from __future__ import annotations

from tests.support.durability_cases import (  # noqa: F401 - collected here with the PostgreSQL fixtures
    test_aborted_association_keeps_nothing_partial,
    test_duplicate_uid_same_or_different_bytes,
    test_orthanc_down_then_up_delivers_once,
    test_orthanc_rejecting_dead_letters,
    test_results_delivered_to_orthanc,
)
