"""The states a study, a job and an outbox object can be in, as ``StrEnum`` values.

They are stored as their string values (the columns are plain strings), so rows written by an
older medgate read back unchanged, and a value compares equal to its string.
"""

from __future__ import annotations

from enum import StrEnum


class StudyStatus(StrEnum):
    """Where a study is in the pipeline; review and delivery are fields, not statuses."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    NOT_PROCESSED = "not-processed"


class JobStatus(StrEnum):
    """A job in the durable queue; ``queued`` with a future ``lease_until`` is a back-off."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    NOT_PROCESSED = "not-processed"


class OutboxStatus(StrEnum):
    """A result object waiting for, confirmed by, or refused for good by its destination."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"
