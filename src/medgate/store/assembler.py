"""The study assembler: a study with no new instance for ``dicom.study_idle_seconds`` is queued.

DICOM has no "end of study" message, so completeness is inferred from silence. A background thread
asks the index every ``interval`` seconds to turn idle ``receiving`` studies into queued jobs (one
transaction in ``JobQueue.enqueue_idle``). A late instance sets the study back to
``receiving`` (``InstanceIndex.add``) and, after the next idle period, the study is queued
again, so the late instance is processed too.
"""

from __future__ import annotations

import logging

from medgate.core.logs import phi_hash
from medgate.core.pass_loop import PassLoop
from medgate.store.db import Index

log = logging.getLogger(__name__)


class StudyAssembler(PassLoop):
    """Passes in a background thread (``PassLoop``: ``start()``, ``stop()``, a failing pass
    retried at the next); ``run_once()`` does one pass (for tests)."""

    thread_name = "medgate-assembler"

    def __init__(
        self,
        index: Index,
        idle_seconds: float,
        *,
        interval: float | None = None,
        audit: object | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self.idle_seconds = idle_seconds
        # Check often enough that a study waits at most ~1.25x its idle time, but not busily.
        self.interval = interval if interval is not None else min(max(idle_seconds / 4, 0.1), 5.0)
        self.audit = audit

    def run_once(self) -> list[str]:
        queued = self.index.jobs.enqueue_idle(self.idle_seconds)
        for uid in queued:
            log.info("study %s complete (idle %.1f s): queued", phi_hash(uid), self.idle_seconds)
            record = getattr(self.audit, "record", None)
            if record is not None:
                record("study-queued", study_uid=uid, details={"idle_seconds": self.idle_seconds})
        return queued
